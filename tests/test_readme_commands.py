"""Every command in README.md and profiles/slurm/README.md runs as typed.

The fenced blocks of both pages are read with a CommonMark parser (markdown-it-py, as GitHub
renders them), and so are the inline commands of README.md's "How do I" table. Each command is
one test, named by its page, line and text, and runs in a fresh copy of the checkout (the files
a clone has, with this working tree's edits) with a private HOME and ``XDG_CONFIG_HOME`` (the
Slurm profile linked there, as ``make slurm-profile`` does), the virtual environment's ``bin``
first on PATH and the copy's own package on PYTHONPATH:

    snakemake ..., .venv/bin/snakemake ...   dry run: ``-n`` added after ``snakemake``
    make TARGET                             ``make -n TARGET``: the target exists, its recipe
                                            expands
    python -m afternoon.cli STAGE ..., mlflow SUBCOMMAND ...
                                            ``... STAGE --help``: the subcommand exists and knows
                                            every ``--option`` the command gives
    python -c CODE                          CODE compiles (it reads a finished study's results)
    mkdir, ln, export, cd                   run as typed (in the private HOME); they also run
                                            before the later commands of their block
    NOT_RUN below                           not run, each with its reason

A console block (lines starting with ``$ ``) also shows output: every shown line (``...`` stands
for anything) must be in the command's output. A program none of these rules names fails its
test, so a new kind of command is checked or excluded by a decision, never by default.

Besides: every fence is closed by a bare fence (an unclosed one turns the rest of the page into
code), a plain block that holds commands must say it is one (``bash`` or ``$ `` lines), and the
YAML blocks parse.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from markdown_it import MarkdownIt

from helpers.paths import REPO
from helpers.runners import output_tail, run

DOCS = ("README.md", "profiles/slurm/README.md")
SHELL_BLOCKS = {"bash", "sh", "shell", "console"}
HOW_DO_I = "How do I"  # README.md's table of tasks: its inline commands are checked too
RUN_TIMEOUT_S = 300

SETUP = {"mkdir", "ln", "export", "cd"}  # run as typed, and before the block's later commands
DRY_RUN = {"snakemake": "-n", "make": "-n"}  # program -> the flag inserted after it
HELP_CHECKED = ("python -m afternoon.cli", "mlflow")  # prefix, then a subcommand: its --help

# Commands that cannot run here, by their exact text, with the reason.
NOT_RUN = {
    "sudo tests/slurm/start-cluster.sh": "starts Slurm's daemons as root; tests/test_slurm.py "
    "runs it (and the lab study) under `pytest -m slurm`",
    "source /tmp/afternoon-slurm/env": "written by tests/slurm/start-cluster.sh",
    "sudo tests/slurm/stop-cluster.sh": "stops what start-cluster.sh started",
}

# Console transcripts whose command fails on purpose: the page shows its error.
FAILS_AS_SHOWN = {
    "snakemake -n --config training='{epochz: 3}'": "a mistyped key: the one-line error",
}

# Console transcripts whose output depends on the machine: what is checked instead (a regex that
# must match a line of the output).
OUTPUT_VARIES = {
    "snakemake -n --config training='{recipes: fast}'": (
        r"afternoon: precision (mixed_bfloat16|float32) for fc64@digits, .*cnn_batchnorm@digits: "
        r"auto: .*"  # this CPU's bf16 flags, or why not
    ),
}

PROGRAM_WORD = re.compile(
    r"""^\s*(?:[A-Za-z_]\w*=(?:'[^']*'|"[^"]*"|[^\s'"])*\s+)*(?P<program>\S+)"""
)
FENCE_LINE = re.compile(r"^ {0,3}(`{3,}|~{3,})")

MARKDOWN = MarkdownIt("commonmark").enable("table")


@dataclass(frozen=True)
class Command:
    doc: str
    line: int  # 1-based, where the command starts on its page
    text: str  # as typed (continuation lines joined)
    prelude: tuple[str, ...] = ()  # the block's earlier set-up commands
    shown: tuple[str, ...] = ()  # the output a console block shows after it

    @property
    def id(self) -> str:
        return f"{self.doc}:{self.line}: {self.text}"


# --- reading the pages ------------------------------------------------------------------------


def tokens(doc: str) -> list:
    return MARKDOWN.parse((REPO / doc).read_text())


def fences(doc: str) -> list:
    return [token for token in tokens(doc) if token.type == "fence"]


def language(fence) -> str:
    return fence.info.strip().split(" ")[0].lower() if fence.info.strip() else ""


def split_commands(line: str) -> list[str]:
    """A shell line's simple commands: split at ``&&``, ``||`` and ``;`` outside quotes."""
    parts, current, quote, i = [], "", None, 0
    while i < len(line):
        char = line[i]
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (not current or current[-1].isspace()):
            break  # a comment, to the end of the line
        elif line.startswith(("&&", "||"), i) or char == ";":
            parts.append(current)
            current, i = "", i + (1 if char == ";" else 2)
            continue
        current += char
        i += 1
    parts.append(current)
    return [part.strip() for part in parts if part.strip()]


def logical_lines(content: str, first_line: int) -> list[tuple[int, str]]:
    """The block's lines with backslash continuations joined: (1-based line, text)."""
    joined, start, pending = [], None, ""
    for number, raw in enumerate(content.splitlines(), first_line):
        start = number if not pending else start
        raw = raw.strip() if pending else raw.rstrip()
        if raw.endswith("\\"):
            pending += raw[:-1].rstrip() + " "
            continue
        joined.append((start, pending + raw))
        pending = ""
    if pending:
        joined.append((start, pending))
    return joined


def program(command: str) -> str:
    """The command's program name, after any ``NAME=value`` assignments (its basename)."""
    match = PROGRAM_WORD.match(command)
    return os.path.basename(match["program"]) if match else ""


def block_commands(doc: str, fence) -> list[Command]:
    """The commands of one shell block (or of a plain block with ``$ `` lines)."""
    lines = logical_lines(fence.content, fence.map[0] + 2)
    console = any(text.startswith("$ ") for _, text in lines)
    commands: list[Command] = []
    prelude: list[str] = []
    for index, (number, text) in enumerate(lines):
        if console and not text.startswith("$ "):
            continue  # output, read below with its command
        text = text[2:] if console else text
        shown: list[str] = []
        if console:
            for _, out in lines[index + 1 :]:
                if out.startswith("$ "):
                    break
                shown.append(out)
        for part in split_commands(text):
            commands.append(Command(doc, number, part, tuple(prelude), tuple(shown)))
            if program(part) in SETUP:
                prelude.append(part)
    return commands


def how_do_i_commands() -> list[Command]:
    """The inline commands (code that starts with a program the checks know) of the README's
    "How do I" section."""
    found, level, line = [], None, 0
    stream = tokens("README.md")
    for index, token in enumerate(stream):
        line = token.map[0] + 1 if token.map else line  # a table cell's is its row's
        if token.type == "heading_open":
            depth = int(token.tag[1])
            if level is not None and depth <= level:
                break
            if stream[index + 1].content.startswith(HOW_DO_I):
                level = depth
        elif level is not None and token.type == "inline":
            for child in token.children or []:
                if child.type == "code_inline" and is_command(child.content):
                    found.append(Command("README.md", line, child.content))
    return found


def is_command(text: str) -> bool:
    return program(text) in SETUP | set(DRY_RUN) | {"python"} or text.startswith(HELP_CHECKED)


def all_commands() -> list[Command]:
    commands = []
    for doc in DOCS:
        for fence in fences(doc):
            if language(fence) in SHELL_BLOCKS or (language(fence) == "" and is_console(fence)):
                commands += block_commands(doc, fence)
    return commands + how_do_i_commands()


def is_console(fence) -> bool:
    return any(line.startswith("$ ") for line in fence.content.splitlines())


COMMANDS = all_commands()


# --- running them -------------------------------------------------------------------------------


def checked_form(command: Command) -> tuple[str, list[str]]:
    """The shell text that checks ``command``, and the ``--options`` its --help must name."""
    text, name = command.text, program(command.text)
    if name in SETUP:
        return text, []
    if name in DRY_RUN:
        flag = DRY_RUN[name]
        words = shlex.split(text)
        if flag in words or "--dry-run" in words or "--dryrun" in words:
            return text, []
        end = PROGRAM_WORD.match(text).end("program")
        return f"{text[:end]} {flag}{text[end:]}", []
    if name == "python" and "-c" in (words := shlex.split(text)):
        # Python code on the command line (it reads a study's results): compiled, not run.
        code = words[words.index("-c") + 1]
        check = "import sys; compile(sys.argv[1], 'README', 'exec')"
        return f".venv/bin/python -c {shlex.quote(check)} {shlex.quote(code)}", []
    for prefix in HELP_CHECKED:
        if text.startswith(prefix + " "):
            subcommand = text[len(prefix) :].split()[0]
            options = [w.split("=")[0] for w in shlex.split(text) if w.startswith("--")]
            return f"{prefix} {subcommand} --help", options
    pytest.fail(
        f"{command.id}: no rule checks `{name}`: add it to the rules of "
        "tests/test_readme_commands.py (a dry form, or NOT_RUN with the reason)"
    )


@pytest.fixture(scope="module")
def checkout(tmp_path_factory):
    """A fresh copy of the checkout (tracked and untracked, not ignored, files: what a clone
    with this working tree's edits has), the virtual environment linked in as .venv, and a
    private Snakemake profile directory with the Slurm profile linked (``make slurm-profile``)."""
    root = tmp_path_factory.mktemp("readme")
    copy = root / "repo"
    listed = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True, check=True,
    ).stdout.decode()  # fmt: skip
    for name in filter(None, listed.split("\0")):
        source = REPO / name
        if source.is_file():  # a file deleted in the working tree is listed, and absent
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, copy / name)
    (copy / ".venv").symlink_to(Path(sys.prefix))
    env = {
        "XDG_CONFIG_HOME": str(root / "xdg"),
        "PYTHONPATH": str(copy / "workflow"),
    }
    linked = run(["make", "-s", "slurm-profile"], cwd=copy, env=env, timeout=60)
    assert linked.returncode == 0, output_tail(linked)
    return copy, env


def shown_patterns(command: Command) -> list[str]:
    if command.text in OUTPUT_VARIES:
        return [OUTPUT_VARIES[command.text]]
    return [".*".join(map(re.escape, line.strip().split("..."))) for line in command.shown]


@pytest.mark.parametrize("command", COMMANDS, ids=[c.id for c in COMMANDS])
def test_command_runs_as_typed(command, checkout, tmp_path):
    if command.text in NOT_RUN:
        return  # listed, with its reason
    copy, env = checkout
    text, options = checked_form(command)
    prelude = [line for line in command.prelude if line not in NOT_RUN]
    script = "\n".join(["set -e", "unset SNAKEMAKE_PROFILE", *prelude, text])
    home = tmp_path / "home"
    home.mkdir()
    result = run(["bash", "-c", script], cwd=copy, env={**env, "HOME": str(home)},
                 timeout=RUN_TIMEOUT_S)  # fmt: skip
    output = result.stdout + result.stderr
    failed = result.returncode != 0
    assert failed == (command.text in FAILS_AS_SHOWN), f"`{text}`: exit {result.returncode}:\n" + (
        output_tail(result)
    )
    for option in options:
        assert option in output, f"`{command.text}`: {option} is not an option of:\n{output}"
    lines = output.splitlines()
    for pattern in shown_patterns(command):
        assert any(re.fullmatch(pattern, line.strip()) for line in lines), (
            f"`{command.text}` printed no line like {pattern!r}:\n{output_tail(result)}"
        )


def test_the_check_fails_on_a_broken_command(checkout, tmp_path):
    """The dry forms still fail on a mistake: a dataset the registry lacks, a missing target,
    a stage's option it does not have."""
    copy, env = checkout
    broken = [
        "snakemake --cores all --config 'datasets=[imagenet]'",
        "make no-such-target",
        "python -m afternoon.cli sync-tracking --no-such-option",
    ]
    for text in broken:
        form, options = checked_form(Command("README.md", 1, text))
        result = run(["bash", "-c", form], cwd=copy, env={**env, "HOME": str(tmp_path)},
                     timeout=RUN_TIMEOUT_S)  # fmt: skip
        output = result.stdout + result.stderr
        unknown = [option for option in options if option not in output]
        assert result.returncode != 0 or unknown, f"`{text}` passed its check:\n{output}"


# --- the pages themselves -----------------------------------------------------------------------


@pytest.mark.parametrize("doc", DOCS)
def test_every_fence_is_closed(doc):
    """An opening fence needs a bare closing fence (text after the backticks makes it none):
    otherwise the block runs on, and the sections after it render as code."""
    lines = (REPO / doc).read_text().splitlines()
    for fence in fences(doc):
        start, end = fence.map
        where = f"{doc}:{start + 1}"
        closing = lines[end - 1] if end - 1 > start else ""
        assert re.fullmatch(r" {0,3}(`{3,}|~{3,})\s*", closing), (
            f"{where}: the block opened here is not closed (it runs to line {end})"
        )
        inner = [n for n, line in enumerate(lines[start + 1 : end - 1], start + 2)
                 if FENCE_LINE.match(line)]  # fmt: skip
        assert not inner, f"{where}: the block holds a fence line at {inner}: one was not closed"


@pytest.mark.parametrize("doc", DOCS)
def test_blocks_say_what_they_hold(doc):
    """A block is shell (checked above), YAML (parsed here) or plain text; a plain block whose
    lines start with a command says it holds commands (``bash``, or ``$ `` prompts)."""
    for fence in fences(doc):
        where, lang = f"{doc}:{fence.map[0] + 1}", language(fence)
        assert lang in SHELL_BLOCKS | {"yaml", ""}, f"{where}: a {lang!r} block: check it here"
        if lang == "yaml":
            yaml.safe_load(fence.content)
        elif lang == "" and not is_console(fence):
            looks = [line for line in fence.content.splitlines() if is_command(line.strip())]
            assert not looks, f"{where}: commands in a plain block ({looks}): mark it bash"


def test_the_how_do_i_table_is_there():
    assert len(how_do_i_commands()) >= 7, "README.md: the 'How do I' table lost its commands"


def test_every_not_run_command_is_still_on_a_page():
    """NOT_RUN, FAILS_AS_SHOWN and OUTPUT_VARIES name commands the pages hold (no stale entry)."""
    typed = {command.text for command in COMMANDS}
    for listed in (NOT_RUN, FAILS_AS_SHOWN, OUTPUT_VARIES):
        assert set(listed) <= typed, set(listed) - typed
