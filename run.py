"""Train the 2017 two-layer CIFAR-10 MLP; `python run.py --help` lists every key, `-m` sweeps them."""

import hydra

from sweeper import cli, config


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg) -> float:
    return cli.run(cfg)


if __name__ == "__main__":
    config.register()  # the schemas conf/ extends, before Hydra composes it
    cli.main(main)
