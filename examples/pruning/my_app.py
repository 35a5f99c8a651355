import hydra

from sweeper.trial import report


@hydra.main(version_base="1.3", config_path=".", config_name="my_app")
def train(cfg) -> float:
    loss = 10.0
    for epoch in range(cfg.epochs):
        loss *= 1 - cfg.lr  # one epoch of your training
        if report(loss, step=epoch):  # the study's pruner stops this trial
            break
    return loss


if __name__ == "__main__":
    train()
