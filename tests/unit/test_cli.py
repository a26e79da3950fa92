import subprocess
import sys

from memoryguard import __version__, cli


def test_version_flag_prints_package_version(capsys):
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == __version__


def test_help_lists_every_subcommand(capsys):
    assert cli.main([]) == 2
    out = capsys.readouterr().out
    for name in cli.COMMANDS:
        assert name in out


def test_agent_subcommand_does_not_load_kopf_or_kubernetes():
    # The agent runs on every node: loading the operator's heavy libraries would cost memory there.
    code = (
        "import sys; from memoryguard import cli; import importlib; "
        "importlib.import_module(cli.COMMANDS['agent'][0]); "
        "print(sorted(m for m in ('kopf', 'kubernetes') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
