"""The docs against the code: every command, config key, make target, link and path that README.md,
docs/*.md and the comments of conf/ mention exists, and every `python run.py` line composes with the real
conf/ and passes sweeper's validation. Nothing is trained; the only subprocess is `make -n`.

A failure names the file, the line and what is wrong, for instance

    docs/config.md:38: `python run.py hiden=60`: does not compose: Could not override 'hiden': ...
"""

from __future__ import annotations

import ast
import copy
import functools
import importlib.util
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import CONF, ROOT, compose_config
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import IntervalSweep, Override
from hydra.errors import HydraException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from sweeper import checks, config, memory
from sweeper.errors import one_line

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MAKEFILE = ROOT / "Makefile"

SWEEP_DIR = "multirun/2026-12-01/10-00-00"
JOB_DIR = f"{SWEEP_DIR}/hidden=240,lr=0.001,reg=1.0"
# The placeholders of the docs' commands and overrides, each with a plausible value, in this order.
PLACEHOLDERS = [
    (r"<its overrides>", "hidden=240 lr=0.001 reg=1.0"),
    (r"(hydra\.sweep\.dir=)<its folder>", rf"\g<1>{SWEEP_DIR}"),  # a sweep's folder
    (r"<its folder>", JOB_DIR),  # a job's folder, named by its overrides: Hydra needs it quoted
    (r"<(?:the same |that |sweep |)folder>", SWEEP_DIR),
    (r"<yours>", "gpu"),
    (r"<its md5>", "0123456789abcdef0123456789abcdef"),
    (r"multirun/DATE/TIME", SWEEP_DIR),
    (r"outputs/DATE/TIME", "outputs/2026-12-01/10-00-00"),
    (r"\bDATE/TIME/", ""),  # a run's name under a parent folder of sweeps: its job's part is checked
    (r"=PATH\b", "=outputs/2026-12-01/10-00-00"),
    (r"\bseed=S\b", "seed=1"),
    (r"(\.dir)=\.\.\.", r"\1=outputs/2026-12-01/10-00-00"),
    (r"=\[\.\.\.\]", "=[{step:400,lr:0.0004,reg:1.25}]"),  # a schedule, elided
    (r",\.\.\.\]", "]"),  # the rest of a schedule, elided
]
# Backticked `a=b` spans that are no override of sweeper's config, and what they are.
NOT_OVERRIDES = {
    "key=value": "the form of an override",
    "editable_mode=compat": "a setuptools setting",
}
# The own-model example's config folder: what the docs' `--config-dir my_conf` stands for.
EXAMPLE_CONF = ROOT / "examples" / "own_model" / "my_conf"
EXAMPLE_SEARCHPATH = f"hydra.searchpath=[file://{EXAMPLE_CONF}]"
# Where keys live that exist only once a group is chosen (`hydra.launcher.partition`, `data.noise`).
CONTEXTS = [
    (),
    ("data=synthetic",),
    ("optimizer=momentum",),
    ("optimizer=adam",),
    ("hydra/launcher=fused",),
    ("hydra/launcher=slurm",),
    ("hydra/launcher=joblib",),
    ("hydra/launcher=submitit_local",),
    ("hydra/sweeper=sweeper_optuna",),  # the plugin's own defaults, as another app gets them
    ("sweep=optuna",),
    (EXAMPLE_SEARCHPATH, "model=convnet"),  # a model of the user's (examples/own_model)
]
# repository paths
TOP_LEVEL = ("conf", "sweeper", "docs", "tests", "benchmarks", "hydra_plugins", "examples", ".ci")
FILE_SUFFIXES = ("py", "md", "csv", "png", "yaml", "json", "pkl", "log", "journal", "lock", "session")
KEY = r"[+~]*[A-Za-z_][\w.]*(?:/[\w.]+)*(?:@[\w.]+)?"
OVERRIDE = re.compile(rf"{KEY}=\S*")


# --- what the docs say ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Snippet:
    """A command line or a backticked span, and where it is."""

    file: Path
    line: int
    text: str
    error: str | None = None  # the `error: ...` line a code block shows right after this command

    def where(self) -> str:
        return f"{self.file.relative_to(ROOT)}:{self.line}"


def code_and_prose(path: Path) -> tuple[list[Snippet], str]:
    """A markdown file's code lines (indented or fenced blocks), and its prose with the code blanked out
    (so that offsets keep their line numbers)."""
    code, prose, fenced, block = [], [], False, False
    previous_blank = True
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            prose.append("")
            continue
        block = bool(line.strip()) and (fenced or (line.startswith("    ") and (previous_blank or block)))
        if block:
            code.append(Snippet(path, number, line.strip()))
        prose.append("" if block else line)
        previous_blank = not line.strip()
    for i, (command, after) in enumerate(zip(code, code[1:], strict=False)):
        if (
            command.text.startswith("$ ")
            and after.line == command.line + 1
            and after.text.startswith("error:")
        ):
            code[i] = Snippet(path, command.line, command.text, error=after.text)
    return code, "\n".join(prose)


def backticked(path: Path, prose: str) -> list[Snippet]:
    """Each `span` of the prose; one broken over lines reads as markdown renders it, with a space."""
    return [
        Snippet(path, prose.count("\n", 0, m.start()) + 1, re.sub(r"\s*\n\s*", " ", m.group(1)))
        for m in re.finditer(r"`([^`]+)`", prose)
    ]


def conf_comment_commands() -> list[Snippet]:
    """The commands that config comments show (`#   python run.py ...`, `#   make ...`)."""
    found = []
    for path in sorted(CONF.rglob("*.yaml")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if match := re.match(r"\s*#\s+((?:python run\.py|make) .*)", line):
                found.append(Snippet(path, number, match.group(1)))
    return found


@functools.cache
def inventory() -> tuple[list[Snippet], list[Snippet]]:
    """(code lines of the docs and commands of config comments, backticked spans of the docs)."""
    code, spans = [], []
    for path in DOCS:
        lines, prose = code_and_prose(path)
        code += lines
        spans += backticked(path, prose)
    return code + conf_comment_commands(), spans


def substitute(text: str) -> str:
    for pattern, value in PLACEHOLDERS:
        text = re.sub(pattern, value, text)
    return text


def words(text: str) -> list[str]:
    """A command line's shell words, its comment dropped; ValueError where a shell would not run it as
    meant (unbalanced quotes, or an unquoted `(` that sh reads as syntax)."""
    lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
    lexer.whitespace_split, lexer.commenters = True, "#"
    tokens = list(lexer)
    syntax = [t for t in tokens if t and set(t) <= set("();<>|&")]
    if syntax:
        raise ValueError(f"a shell reads {syntax[0]!r} as syntax: quote that word")
    return tokens


def commands() -> list[tuple[Snippet, list[str] | str]]:
    """Every `python ...` and `make ...` line and span: (where, its words with placeholders filled, or
    why a shell could not split it)."""
    code, spans = inventory()
    out: list[tuple[Snippet, list[str] | str]] = []
    for snippet in code + spans:
        text = snippet.text.removeprefix("$ ")
        # The own-model example's commands: run from its folder, its models on PYTHONPATH.
        text = re.sub(r"^PYTHONPATH=\S+ ", "", text).replace("python ../../run.py", "python run.py")
        if re.match(r"(python |make )", text):
            try:
                out.append((snippet, words(substitute(text))))
            except ValueError as error:
                out.append((snippet, str(error)))
    return out


# --- composing ------------------------------------------------------------------------------------------


@functools.cache
def groups() -> dict[str, tuple[str, ...]]:
    """Every config group of the app, plugins' included (`data`, `hydra/launcher`, ...), and its options."""
    config.register()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()

        def below(parent: str) -> list[str]:
            names = [f"{parent}/{g}" if parent else g for g in loader.list_groups(parent)]
            return [deeper for name in names for deeper in (name, *below(name))]

        return {group: tuple(loader.get_group_options(group)) for group in below("")}


@functools.cache
def composed(overrides: tuple[str, ...]):
    """The config (hydra node included) that Hydra's compose API gives for `overrides`, or its error."""
    try:
        return compose_config(*overrides, return_hydra=True)
    except (HydraException, OmegaConfBaseException, ValueError) as error:
        return one_line(error)


@functools.cache
def parser() -> OverridesParser:
    return OverridesParser.create()


def parse(overrides: list[str] | tuple[str, ...]) -> list[Override]:
    return parser().parse_overrides(list(overrides))


def job_config(overrides: tuple[str, ...]):
    """`python run.py OVERRIDES`'s config, or why it has none: the group choices composed by Hydra, then
    each value set on that typed config as Hydra sets it (OmegaConf.update, merge=True, struct), which is
    what composing them all gives, for a fraction of the time."""
    try:
        parsed = parse(overrides)
    except HydraException as error:
        return f"Hydra cannot parse it: {one_line(error)}"
    if any(o.is_add() or o.is_delete() or o.is_force_add() for o in parsed):
        return composed(overrides)
    chosen = [o for o in parsed if o.key_or_group in groups() or o.key_or_group == "hydra.searchpath"]
    cfg = composed(tuple(o.input_line for o in chosen))
    if isinstance(cfg, str):
        return cfg
    cfg = copy.deepcopy(cfg)
    for override in (o for o in parsed if o not in chosen):
        try:
            OmegaConf.update(cfg, override.key_or_group, override.value(), merge=True)
        except OmegaConfBaseException as error:
            return f"Could not override '{override.key_or_group}': {one_line(error)}"
    return cfg


def first_values(overrides: list[str] | tuple[str, ...]) -> list[str]:
    """A sweep's first job as Hydra's parser splits it: each sweep (`a,b`, `choice`, `range`, `interval`)
    at its first value, everything else as given."""
    out = []
    for override in parse(overrides):
        if override.is_sweep_override():
            value = override.value()
            first = (
                value.start if isinstance(value, IntervalSweep) else next(override.sweep_string_iterator())
            )
            out.append(f"{override.get_key_element()}={first}")
        else:
            out.append(override.input_line)
    return out


def sweep_first_job(overrides: list[str]) -> tuple[str, ...]:
    """`python run.py -m OVERRIDES`'s first job: the sweep config's `hydra.sweeper.params`, then the
    command line (which wins for a key it sets too), each at its first value."""
    line = first_values(overrides)
    cfg = job_config(tuple(line))
    params = None if isinstance(cfg, str) else cfg.hydra.sweeper.get("params")
    params = OmegaConf.to_container(params) if params else {}
    given = {config.override_key(o) for o in line}
    return (*first_values([f"{k}={v}" for k, v in params.items() if k not in given]), *line)


def start_problem(overrides: tuple[str, ...], *, validate: bool = True) -> str | None:
    """Why `python run.py OVERRIDES` would not start, or None: it composes, its interpolations resolve,
    and (with `validate`) sweeper's validation accepts it."""
    cfg = job_config(overrides)
    if isinstance(cfg, str):
        return f"does not compose: {cfg}"
    try:
        OmegaConf.to_container(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), resolve=True)
        # A user's own arrays (their file, their loader module) are the reader's: composing is the check.
        if validate and cfg.data.name not in ("npz", "loader"):
            checks.validate(cfg)
    except (config.ConfigError, OmegaConfBaseException) as error:
        return f"is refused: {one_line(error)}"
    return None


def printed_error(overrides: list[str], monkeypatch) -> str:
    """The one line `python run.py OVERRIDES` prints before any work: Hydra's composition (all of it, for
    its exact words), sweeper's validation, the memory estimate."""
    cfg = composed(tuple(overrides))
    if isinstance(cfg, str):
        return cfg
    try:
        checks.validate(cfg)
        with monkeypatch.context() as patch:  # memory nothing fits in, whatever this machine has
            patch.setattr(memory, "available_bytes", lambda: (1, "available host memory"))
            memory.check_fits(cfg)
    except config.ConfigError as error:
        return one_line(error)
    return "(no error)"


# --- commands -------------------------------------------------------------------------------------------


def run_problems(argv: list[str], *, validate: bool = True) -> list[str]:
    """What is wrong with `python run.py ARGV`."""
    multirun = any(a in ("-m", "--multirun") for a in argv)
    overrides, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--cfg":
            skip = True  # its argument: job, hydra or all
        elif arg == "--config-dir":  # the docs' my_conf: the own-model example's
            skip = True
            overrides.insert(0, EXAMPLE_SEARCHPATH)
        elif arg.startswith("-"):
            if arg not in ("-m", "--multirun", "--help", "-h", "--info", "--resolve"):
                return [f"unknown flag {arg}"]
        elif re.search(r"<[^>]*>", arg):
            return [f"unknown placeholder in {arg!r}: give it a value in PLACEHOLDERS (tests/docs_test.py)"]
        else:
            overrides.append(arg)
    try:
        job = sweep_first_job(overrides) if multirun else tuple(overrides)
    except HydraException as error:
        return [f"Hydra cannot parse its overrides: {one_line(error)}"]
    problem = start_problem(job, validate=validate)
    first = f" (its first job: {' '.join(job)})" if multirun else ""
    return [f"{problem}{first}"] if problem else []


@functools.cache
def make_targets() -> frozenset[str]:
    return frozenset(re.findall(r"^([\w-]+):(?!=)", MAKEFILE.read_text(), re.M))


@functools.cache
def make_dry_run(argv: tuple[str, ...]) -> list[str] | str:
    """The command lines `make ARGV` would run (`make -n`), or its error."""
    result = subprocess.run(
        ["make", "-n", "--no-print-directory", "PYTHON=python", *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return result.stdout.splitlines() if result.returncode == 0 else result.stderr.strip()


def make_problems(argv: list[str]) -> list[str]:
    """Each target must be the Makefile's, each VAR= one it reads; the `python run.py` lines it would
    run (`make -n`) must start."""
    makefile = MAKEFILE.read_text()
    problems = [f"the Makefile has no target {a}" for a in argv if "=" not in a and a not in make_targets()]
    problems += [
        f"the Makefile never reads $({var})"
        for var in (a.split("=", 1)[0] for a in argv if "=" in a)
        if f"$({var})" not in makefile
    ]
    if problems or shutil.which("make") is None:
        return problems
    lines = make_dry_run(tuple(argv))
    if isinstance(lines, str):
        return [f"make -n fails: {lines}"]
    for line in (line for line in lines if line.startswith("python run.py")):
        try:
            problems += [f"runs `{line.strip()}`, which {p}" for p in run_problems(words(line)[2:])]
        except ValueError as error:
            problems.append(f"runs `{line.strip()}`, but {error}")
    return problems


def command_problems(snippet: Snippet, argv: list[str] | str, monkeypatch) -> list[str]:
    """What is wrong with the command `argv` (its shell words) that `snippet` shows."""
    if isinstance(argv, str):
        return [argv]
    if argv[:2] == ["python", "run.py"] and snippet.error is not None:
        expected = snippet.error.removeprefix("error:").strip()
        actual = printed_error([a for a in argv[2:] if not a.startswith("-")], monkeypatch)
        pattern = ".*".join(re.escape(part.strip()) for part in expected.split("..."))  # ... elides
        return [] if re.fullmatch(pattern + ".*", actual) else [f"prints `error: {actual}` instead"]
    if argv[:2] == ["python", "run.py"]:
        return run_problems(argv[2:])
    if argv[:2] == ["python", "-m"]:
        return [] if importlib.util.find_spec(argv[2]) else [f"there is no module {argv[2]}"]
    if argv[0] == "python" and argv[1].endswith(".py"):
        return [] if (ROOT / argv[1]).is_file() else [f"there is no {argv[1]}"]
    if argv[0] == "make":
        return make_problems(argv[1:])
    return []


# --- overrides, keys, paths, names ----------------------------------------------------------------------


def override_spans() -> list[tuple[Snippet, list[str]]]:
    """The prose's backticked overrides (`data.root=/data`, `resume=true hydra.run.dir=...`, a job
    folder's name `hidden=240,lr=0.001`), each with the overrides it stands for (`k=a|b`: k=a and k=b)."""
    out = []
    for snippet in inventory()[1]:
        text = snippet.text
        if text in NOT_OVERRIDES or "=" not in text or text.startswith(("python ", "make ", "error:")):
            continue
        try:
            tokens = words(substitute(text))
        except ValueError:
            continue
        if not tokens or not all(OVERRIDE.fullmatch(t) for t in tokens):
            continue
        if any(t.split("=", 1)[0].isupper() for t in tokens):  # an environment variable
            continue
        if len(tokens) == 1 and re.fullmatch(rf"{KEY}=[^,]*(,{KEY}=[^,]*)+", tokens[0]):
            tokens = tokens[0].split(",")  # a job folder's name: the overrides it is made of
        overrides = []
        for token in tokens:
            key, value = token.split("=", 1)
            choices = value.split("|") if re.fullmatch(r"[\w.]+(\|[\w.]+)+", value) else [value]
            overrides += [f"{key}={choice}" for choice in choices]
        out.append((snippet, overrides))
    return out


def override_problem(text: str) -> str | None:
    """None when the override `text` (each value, for a sweep) is taken in one of CONTEXTS."""
    try:
        (override,) = parse([text])
    except HydraException as error:
        return f"Hydra cannot parse it: {one_line(error)}"
    if override.is_sweep_override():
        value = override.value()
        items = [value.start] if isinstance(value, IntervalSweep) else list(override.sweep_string_iterator())
        return next(filter(None, (override_problem(f"{override.key_or_group}={i}") for i in items)), None)
    key = override.key_or_group
    parent, _, leaf = key.rpartition(".")

    def has_key(context: tuple[str, ...]) -> bool:
        cfg = composed(context)
        node = cfg if isinstance(cfg, str) or not parent else OmegaConf.select(cfg, parent)
        return OmegaConf.is_dict(node) and leaf in node

    if key in groups():
        options = groups()[key]
        value = override.value()
        return (
            None
            if value is None or value in options
            else f"{key} has no option {value}: {', '.join(options)}"
        )
    # Where the key is (a launcher's, once it is chosen), else the first: its error says it is not there.
    problems = []
    for context in [c for c in CONTEXTS if has_key(c)] or CONTEXTS[:1]:
        if (problem := start_problem((*context, text), validate=False)) is None:
            return None
        problems.append(problem)
    return problems[0]


def config_value(key: str):
    """The default of `key` in the first of CONTEXTS that has it (a group: its option's `name`; `k.*`:
    the values under k), else `<missing>`."""
    for context in CONTEXTS:
        cfg = composed(context)
        value = OmegaConf.select(cfg, key.removesuffix(".*"), default="<missing>")
        if value == "<missing>":
            continue
        if key.endswith(".*"):
            return set(OmegaConf.to_container(value).values())
        if OmegaConf.is_dict(value):  # a group's choice: its `name`, or what Hydra records it chose
            choice = OmegaConf.select(cfg, "hydra.runtime.choices", default={}).get(key.replace(".", "/"))
            return value.get("name", choice or "<a config node>")
        return OmegaConf.to_container(value) if OmegaConf.is_config(value) else getattr(value, "value", value)
    return "<missing>"


@functools.cache
def python_files(root: Path) -> frozenset[str]:
    """The names of the repository's Python files."""
    found = {p.name for p in root.glob("*.py")}
    for folder in ("sweeper", "hydra_plugins", "tests", "benchmarks", "examples"):
        found |= {p.name for p in (root / folder).rglob("*.py")}
    return frozenset(found)


def module_problem(span: str) -> str | None:
    """For `sweeper.package.module.name` (any depth) and `module.name`: whether sweeper has the module and
    it defines the name (where `module.name` is not a config key, such as `data.root`)."""
    if not re.fullmatch(r"[a-z_]+(?:\.[A-Za-z_]\w*)+", span) or span.rsplit(".", 1)[1] in FILE_SUFFIXES:
        return None
    parts, package = span.split("."), span.startswith("sweeper.")
    if package:
        parts = parts[1:]
    elif len(parts) != 2:
        return None
    folder, i = ROOT / "sweeper", 0
    while i < len(parts) and (folder / parts[i] / "__init__.py").is_file():
        folder, i = folder / parts[i], i + 1
    if i < len(parts) and (folder / f"{parts[i]}.py").is_file():
        path, i = folder / f"{parts[i]}.py", i + 1
    elif i > 0:  # a package: what its __init__ hands on
        path = folder / "__init__.py"
    else:
        return f"there is no sweeper/{'/'.join(parts[: i + 1])}.py" if package else None
    names = parts[i:]
    if len(names) != 1 or config_value(span) != "<missing>":
        return None
    tree = ast.parse(path.read_text())
    defined = {n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.ClassDef)}
    defined |= {
        t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)
    }
    defined |= {a.asname or a.name for n in tree.body if isinstance(n, ast.ImportFrom) for a in n.names}
    return None if names[0] in defined else f"{path.relative_to(ROOT)} defines no {names[0]}"


def named_test_problem(span: str) -> str | None:
    """For `name_test` and `name_test::test_prefix...`: the test module, and a test of that name in it."""
    match = re.fullmatch(r"(\w+_test)(?:::(test_\w+?)(?:\.\.\.)?)?", span)
    if not match:
        return None
    module, test = match.groups()
    path = ROOT / "tests" / f"{module}.py"
    if not path.is_file():
        return f"there is no tests/{module}.py"
    if test and not re.search(rf"^def {re.escape(test)}", path.read_text(), re.M):
        return f"tests/{module}.py has no test {test}{'...' if span.endswith('...') else ''}"
    return None


def path_problems(path: Path) -> list[str]:
    """Relative links, repository paths (`conf/...`, `sweeper/...`, in prose too) and `*.py` names."""
    text, where, problems = path.read_text(), path.relative_to(ROOT), []

    def line(offset: int) -> int:
        return text.count("\n", 0, offset) + 1

    for match in re.finditer(r"\[[^\]]*\]\(([^)\s]+)\)", text):
        target = match.group(1).split("#", 1)[0]
        if target and not re.match(r"[a-z]+:", target) and not (path.parent / target).exists():
            problems.append(f"{where}:{line(match.start())}: the link ({match.group(1)}) leads nowhere")
    top = "|".join(re.escape(t) for t in TOP_LEVEL)
    for match in re.finditer(rf"(?<![\w/.~<$-])((?:{top})/[\w.*/<>-]*[\w*])", text):
        found = match.group(1)
        if "<" not in found and not (list(ROOT.glob(found)) if "*" in found else (ROOT / found).exists()):
            problems.append(f"{where}:{line(match.start())}: there is no {found}")
    for match in re.finditer(r"(?<![\w/.<*-])([A-Za-z_]\w*\.py)\b", text):
        if match.group(1) not in python_files(ROOT):
            problems.append(f"{where}:{line(match.start())}: there is no {match.group(1)}")
    return problems


def default_rows(path: Path) -> list[tuple[int, list[str], list[str]]]:
    """(line, keys, defaults) of each row of the tables headed `key | default` or `setting | default`."""
    rows, in_table = [], False
    for number, line in enumerate(path.read_text().splitlines(), 1):
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("|") else []
        if cells[:2] in (["key", "default"], ["setting", "default"]):
            in_table = True
        elif not cells:
            in_table = False
        elif in_table and set(cells[0]) - set("-"):
            keys = re.findall(r"`([^`]+)`", cells[0])
            defaults = cells[1].split(", ") if len(keys) > 1 else [cells[1]]
            rows.append((number, keys, defaults if len(defaults) == len(keys) else ["(prose)"] * len(keys)))
    return rows


def literal(cell: str):
    """A table's default as a value, or ... where it is words (`official`, `~/... (`$VAR`)`)."""
    cell = cell[1:-1] if re.fullmatch(r"`[^`\s]+`", cell) else cell
    if re.fullmatch(r"-?\d+", cell):
        return int(cell)
    if re.fullmatch(r"-?\d*\.\d+(e-?\d+)?", cell):
        return float(cell)
    named = {"true": True, "false": False, "null": None, "[]": []}
    if cell in named:
        return named[cell]
    return cell if re.fullmatch(r"[a-z_][\w.]*", cell) and cell != "official" else ...


# --- the tests ------------------------------------------------------------------------------------------


def report(problems: list[str]) -> str:
    return f"{len(problems)} problem(s) in the docs:\n" + "\n".join(problems)


def test_every_command_the_docs_show_works(monkeypatch):
    """Each `python run.py ...` composes and validates (a sweep: its first job), each error shown after
    one is what it prints, each `make X` is a target whose run.py lines do as much, `python -m X` exists."""
    problems = [
        f"{snippet.where()}: `{snippet.text}`: {problem}"
        for snippet, argv in commands()
        for problem in command_problems(snippet, argv, monkeypatch)
    ]
    assert not problems, report(problems)


def test_every_override_in_backticks_is_taken():
    problems = [
        f"{snippet.where()}: `{snippet.text}`: {problem}"
        for snippet, overrides in override_spans()
        for problem in filter(None, map(override_problem, overrides))
    ]
    assert not problems, report(problems)


def test_every_link_path_and_module_exists():
    problems = [p for path in DOCS for p in path_problems(path)]
    problems += [
        f"{snippet.where()}: `{snippet.text}`: {problem}"
        for snippet in inventory()[1]
        if (problem := module_problem(snippet.text) or named_test_problem(snippet.text))
    ]
    assert not problems, report(problems)


def test_the_tables_of_keys_give_the_configs_defaults():
    problems = []
    for path in DOCS:
        for line, keys, defaults in default_rows(path):
            for key, default in zip(keys, defaults, strict=True):
                where, actual, documented = (
                    f"{path.relative_to(ROOT)}:{line}: `{key}`",
                    config_value(key),
                    literal(default),
                )
                if actual == "<missing>":
                    problems.append(f"{where}: no such key in the config")
                elif documented is not ... and (
                    actual != {documented} if isinstance(actual, set) else actual != documented
                ):
                    problems.append(f"{where}: the table says {documented!r}, the config {actual!r}")
    assert not problems, report(problems)


# Numbers in config comments that are no measurement of sweeper's: SLURM's own behaviour and defaults.
NOT_MEASUREMENTS = ("about every 30 s", "up to a minute early", "(default 30 s)")
MEASUREMENT = re.compile(
    r"~\s*\d|\babout \d|\b\d+(\.\d+)?\s*(s|ms|min|minutes|seconds|h|hours|%|GB|MB)\b"
    r"|\baccuracy (of |about )?0\.\d"
)


def test_config_comments_quote_no_measurements():
    """Measured numbers go stale: a config comment points to the docs page that dates them instead."""
    problems = []
    for path in sorted(CONF.rglob("*.yaml")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            comment = line.split("#", 1)[1] if "#" in line else ""
            for allowed in NOT_MEASUREMENTS:
                comment = comment.replace(allowed, "")
            if match := MEASUREMENT.search(comment):
                problems.append(f"{path.relative_to(ROOT)}:{number}: {match.group(0)!r} in `#{comment}`")
    assert not problems, report(problems)


def test_the_checks_catch_broken_lines(tmp_path, monkeypatch):
    """A wrong key, a missing target, a wrong error line, a dead link and a missing path each fail,
    named by file and line."""
    doc = tmp_path / "broken.md"
    doc.write_text(
        "# Broken\n\n    python run.py hiden=60\n    make no-such-target\n\n"
        "See [nothing](nothing.md), `conf/sweep/nothing.yaml` and `lr=fast`.\n\n"
        "    $ python run.py lr=-1\n    error: lr must be positive\n"
    )
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    code, prose = code_and_prose(doc)
    found = [
        f"{s.where()}: {p}"
        for s in code
        if s.text.startswith(("python", "make", "$"))
        for p in command_problems(s, words(s.text.removeprefix("$ ")), monkeypatch)
    ]
    found += [f"{doc.name}:6: {override_problem(o)}" for o in ("lr=fast",)]
    found += path_problems(doc)
    expected = [
        "broken.md:3: does not compose: Could not override 'hiden': Key 'hiden' not in 'Config'",
        "broken.md:4: the Makefile has no target no-such-target",
        "broken.md:8: prints `error: lr must be > 0 and finite, got -1.0` instead",
        "broken.md:6: does not compose: Could not override 'lr': Value 'fast' of type 'str' could not be",
        "broken.md:6: the link (nothing.md) leads nowhere",
        "broken.md:6: there is no conf/sweep/nothing.yaml",
    ]
    for line in expected:
        assert any(f.startswith(line) for f in found), (line, found)
    assert [s.text for s in backticked(doc, prose)] == ["conf/sweep/nothing.yaml", "lr=fast"]


@pytest.mark.parametrize(
    "text, error",
    [
        ("python run.py -m 'seed=range(0,3)'", None),
        ("python run.py -m seed=range(0,3)", "a shell reads '(' as syntax"),
        ("python run.py 'schedule=[{step:400,lr:0.001,reg:1.0}]'  # a comment", None),
    ],
)
def test_command_lines_split_as_a_shell_splits_them(text, error):
    if error is None:
        assert words(text)[:2] == ["python", "run.py"] and "#" not in " ".join(words(text))
    else:
        with pytest.raises(ValueError, match=re.escape(error)):
            words(text)
