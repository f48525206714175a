"""The repository's promises: README commands, CI script and declared dependencies agree."""
import os
import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _readme_commands():
    """The shell commands in the README's first fenced block, in order."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"```(?:bash|sh)?\n(.*?)```", text, re.S)
    assert block, "README must open with a fenced block holding the two commands"
    return [line.strip() for line in block.group(1).splitlines() if line.strip() and not line.startswith("#")]


def test_readme_opens_with_main_job_and_test_commands():
    commands = _readme_commands()
    assert len(commands) == 2, commands
    main_job, tests = commands
    assert main_job.startswith("pip install") and "tfzoo " in main_job
    assert tests.startswith("pip install") and "pytest" in tests


def test_ci_runs_exactly_the_readme_test_command():
    test_command = _readme_commands()[1]
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    ci_lines = [line.strip() for line in ci.splitlines() if line.strip() and not line.strip().startswith("#")]
    assert test_command in ci_lines
    assert "python3 -m venv" in ci  # installs from scratch into a fresh environment


def test_dependencies_declared_without_tensorflow_addons():
    setup = (ROOT / "setup.py").read_text(encoding="utf-8")
    for package in ("tensorflow>=2.18", "keras>=3.13.2", "tensorflow-datasets", "numpy", "pycocotools",
                    "pillow", "defusedxml", "tqdm", "matplotlib", "opencv-contrib-python-headless"):
        assert f'"{package}"' in setup, package
    assert "tensorflow-addons" not in setup and "tensorflow_addons" not in setup
    assert '"console_scripts": ["tfzoo=tfzoo.cli:main"]' in setup
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "tensorflow-addons" in readme  # the README says why it is not used


def test_package_never_imports_tensorflow_addons_or_pickle():
    for path in (ROOT / "tfzoo").rglob("*.py"):
        source = path.read_text(encoding="utf-8")
        assert "tensorflow_addons" not in source, path
        assert not re.search(r"^\s*import pickle|^\s*from pickle", source, re.M), path


def test_saved_models_artifacts_are_ignored():
    ignore = (ROOT / ".gitignore").read_text(encoding="utf-8").split()
    assert "saved_models/*" in ignore and "!saved_models/README.md" in ignore


def test_models_and_exports_do_not_import_training():
    """Layering: models and exports stand below training (no import circle models/base ->
    train -> models); loading a compiled model needs only tfzoo.optim's registrations."""
    code = ("import sys, tfzoo.models, tfzoo.export, tfzoo.eval; "
            "print(sorted(m for m in sys.modules if m.startswith(('tfzoo.train', 'tfzoo.cli', 'tfzoo.demo'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}).stdout
    assert out.strip() == "[]"
