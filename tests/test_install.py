"""The install: which TensorFlow build a machine gets, the requirement files of each role, the commands the
README and CI run, and the rule that a skipped test fails `make test`."""

from __future__ import annotations

import importlib.metadata
import platform
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
INSTALL_PYTHON = ROOT / "scripts" / "install_python_deps.sh"


def _requirements(path: Path) -> list[Requirement]:
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [Requirement(line) for line in lines if line]


def _pinned_tensorflow() -> str:
    pins = {str(r.specifier) for r in _requirements(ROOT / "requirements.txt")
            if r.name in ("tensorflow", "tensorflow-cpu")}
    assert len(pins) == 1 and next(iter(pins)).startswith("=="), pins
    return next(iter(pins))[2:]


def _fake_nvidia_smi(bin_dir: Path, works: bool) -> None:
    """An nvidia-smi that lists one GPU, or one that fails as it does where the driver is not loaded."""
    bin_dir.mkdir(exist_ok=True)
    script = bin_dir / "nvidia-smi"
    body = ('echo "GPU 0: NVIDIA H200 (UUID: GPU-00000000-0000-0000-0000-000000000000)"' if works else
            'echo "NVIDIA-SMI has failed because it could not communicate with the NVIDIA driver." >&2; exit 9')
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(0o755)


def _tensorflow_choice(tmp_path: Path, *, nvidia_smi_works: bool, driver_dir: bool, gpu: str | None = None):
    bin_dir = tmp_path / "bin"
    _fake_nvidia_smi(bin_dir, nvidia_smi_works)
    driver = tmp_path / "proc-driver-nvidia"
    if driver_dir:
        driver.mkdir(exist_ok=True)
    env = {"PATH": f"{bin_dir}:/usr/local/bin:/usr/bin:/bin", "NVIDIA_DRIVER_DIR": str(driver)}
    if gpu is not None:
        env["GPU"] = gpu
    return subprocess.run(["bash", str(INSTALL_PYTHON), "--tensorflow"], env=env, capture_output=True, text=True)


@pytest.mark.parametrize("nvidia_smi_works, driver_dir, gpu, build", [
    (True, False, None, "cuda"),    # nvidia-smi lists a GPU
    (False, True, None, "cuda"),    # the driver is loaded, nvidia-smi broken
    (False, False, None, "cpu"),    # no GPU
    (False, False, "1", "cuda"),    # asked for: make install GPU=1
    (True, True, "0", "cpu"),       # CPU build asked for on a GPU machine
])
def test_tensorflow_build_follows_the_gpu(tmp_path, nvidia_smi_works, driver_dir, gpu, build):
    done = _tensorflow_choice(tmp_path, nvidia_smi_works=nvidia_smi_works, driver_dir=driver_dir, gpu=gpu)
    assert done.returncode == 0, done.stderr
    version = _pinned_tensorflow()
    cpu_name = "tensorflow-cpu" if platform.machine() == "x86_64" else "tensorflow"
    expected = f"tensorflow[and-cuda]=={version}" if build == "cuda" else f"{cpu_name}=={version}"
    assert done.stdout.strip() == expected


def test_a_bad_gpu_value_is_refused(tmp_path):
    done = _tensorflow_choice(tmp_path, nvidia_smi_works=True, driver_dir=False, gpu="yes")
    assert done.returncode != 0 and done.stdout == ""
    assert "GPU=yes" in done.stderr


FAKE_PYTHON = """#!/bin/bash
# Logs each call; `-m pip show --quiet NAME` succeeds for the names in $INSTALLED; `-r FILE` logs FILE's lines.
echo "CALL $*" >> "$LOG"
if [ "$1 $2 $3" = "-m pip show" ]; then [[ " $INSTALLED " == *" ${@: -1} "* ]]; exit; fi
previous=
for arg in "$@"; do
  if [ "$previous" = "-r" ]; then sed "s|^|  $(basename "$arg"): |" "$arg" >> "$LOG"; fi
  previous=$arg
done
"""


def _install_with_fake_python(tmp_path: Path, gpu: str, installed: str, *roles: str) -> list[str]:
    fake = tmp_path / "python"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)
    log = tmp_path / "log"
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "PYTHON": str(fake), "LOG": str(log), "GPU": gpu,
           "INSTALLED": installed}
    subprocess.run(["bash", str(INSTALL_PYTHON), *roles], env=env, check=True, capture_output=True, text=True)
    return log.read_text().splitlines()


def test_the_cuda_build_replaces_the_cpu_build_and_requirements_keep_no_other_tensorflow(tmp_path):
    version = _pinned_tensorflow()
    log = _install_with_fake_python(tmp_path, "1", "tensorflow-cpu numpy", "serve", "test")
    calls = [line.removeprefix("CALL ") for line in log if line.startswith("CALL ")]
    assert calls[1] == "-m pip uninstall --quiet --yes tensorflow-cpu"
    assert calls[2].startswith(f"-m pip install --quiet -c requirements-constraints.txt "
                               f"tensorflow[and-cuda]=={version} -r ")
    assert calls[2].endswith(" -r requirements-serve.txt -r requirements-test.txt")
    assert calls[3] == "-m pip install --quiet --no-deps -e ."
    passed = {}
    for line in log:
        if not line.startswith("CALL "):
            source, _, requirement = line.strip().partition(":")
            passed.setdefault(source, []).append(requirement)
    core = [Requirement(r.split("#")[0]) for r in passed.pop(next(k for k in passed if k.startswith("tmp")))
            if r.split("#")[0].strip()]
    expected_core = [r for r in _requirements(ROOT / "requirements.txt")
                     if r.name not in ("tensorflow", "tensorflow-cpu")]
    assert [str(r) for r in core] == [str(r) for r in expected_core]
    assert set(passed) == {"requirements-core.txt", "requirements-serve.txt", "requirements-test.txt"}


def test_the_cpu_build_keeps_an_installed_cpu_build(tmp_path):
    log = _install_with_fake_python(tmp_path, "0", "tensorflow-cpu")
    calls = [line.removeprefix("CALL ") for line in log if line.startswith("CALL ")]
    assert not any("uninstall" in call for call in calls)
    cpu_name = "tensorflow-cpu" if platform.machine() == "x86_64" else "tensorflow"
    assert f" {cpu_name}=={_pinned_tensorflow()} -r " in calls[1]


def test_every_role_is_an_extra_a_requirements_file_and_installed_by_make_test():
    dynamic = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["dynamic"]
    assert dynamic["dependencies"] == {"file": ["requirements-core.txt"]}
    extras = {role: spec["file"] for role, spec in dynamic["optional-dependencies"].items()}
    files = {p.name.removeprefix("requirements-").removesuffix(".txt")
             for p in ROOT.glob("requirements-*.txt")} - {"constraints", "core"}
    assert extras == {"train": ["requirements.txt"], **{role: [f"requirements-{role}.txt"] for role in files}}
    for role in files:
        assert _requirements(ROOT / f"requirements-{role}.txt"), role

    recipes = subprocess.run(["make", "-n", "-B", "test"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.splitlines()
    installs = [line.split() for line in recipes if "scripts/install_" in line]
    for script in ("scripts/install_system_deps.sh", "scripts/install_python_deps.sh"):
        (command,) = [words for words in installs if script in words]
        assert set(command[command.index(script) + 1:]) == files, command


def test_ci_runs_the_readme_test_command_with_skips_failing():
    commands = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()
                if line.strip() and not line.startswith(("#", "set ", "cd "))]
    assert commands == ["make test"]
    readme = (ROOT / "README.md").read_text()
    assert re.search(r"^make test\b", readme, re.MULTILINE)
    recipes = subprocess.run(["make", "-n", "test"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    (pytest_line,) = [line for line in recipes.splitlines() if "-m pytest" in line]
    assert pytest_line.startswith("VOXTRACE_NO_SKIPS=1 ") and '-m "not slow"' in pytest_line


def _pytest_with_conftest(tmp_path: Path, no_skips: bool) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "PYTHONPATH": str(ROOT / "tests")}
    if no_skips:
        env["VOXTRACE_NO_SKIPS"] = "1"
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "conftest", "-p", "no:cacheprovider", "-q",
                           "-c", str(tmp_path / "pytest.ini"), str(tmp_path)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("skipping_test", [
    "import pytest\n\n@pytest.mark.skipif(True, reason='engine missing')\ndef test_b():\n    pass\n",
    "import pytest\n\npytest.importorskip('voxtrace_no_such_module')\n\ndef test_b():\n    pass\n",
], ids=["skipif", "module-importorskip"])
def test_a_skip_fails_the_run_only_with_voxtrace_no_skips(tmp_path, skipping_test):
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_a.py").write_text("def test_a():\n    assert True\n")
    (tmp_path / "test_b.py").write_text(skipping_test)
    relaxed = _pytest_with_conftest(tmp_path, no_skips=False)
    assert relaxed.returncode == 0, relaxed.stdout
    assert "1 passed, 1 skipped" in relaxed.stdout
    strict = _pytest_with_conftest(tmp_path, no_skips=True)
    assert strict.returncode == 1, strict.stdout
    assert "VOXTRACE_NO_SKIPS=1: 1 skipped test(s) fail this run" in strict.stdout

    (tmp_path / "test_b.py").unlink()
    assert _pytest_with_conftest(tmp_path, no_skips=True).returncode == 0


def _local_project(root: Path, name: str, version: str, dependencies: list[str]) -> Path:
    project = root / name
    (project / name).mkdir(parents=True)
    (project / name / "__init__.py").write_text("")
    (project / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n'
        f'[project]\nname = "{name}"\nversion = "{version}"\ndependencies = {dependencies!r}\n'.replace("'", '"'))
    return project


def test_constraints_refuse_a_dependency_on_torch(tmp_path):
    """A package that needs torch resolves without the constraints file and fails with it."""
    wheels = tmp_path / "wheels"
    torch = _local_project(tmp_path, "torch", "0.0.1", [])
    subprocess.run([sys.executable, "-m", "pip", "--isolated", "wheel", "--quiet", "--no-deps",
                    "--no-build-isolation", "-w", str(wheels), str(torch)], check=True, capture_output=True)
    needs_torch = _local_project(tmp_path, "needs_torch", "1.0", ["torch"])

    def dry_run(*constraints):
        return subprocess.run([sys.executable, "-m", "pip", "--isolated", "install", "--dry-run", "--no-index",
                               "--no-build-isolation", "--find-links", str(wheels), *constraints,
                               str(needs_torch)], capture_output=True, text=True, timeout=120)

    assert dry_run().returncode == 0
    refused = dry_run("-c", str(ROOT / "requirements-constraints.txt"))
    assert refused.returncode != 0
    assert re.search(r"needs[-_]torch 1\.0 depends on torch", refused.stdout)
    assert "torch<0" in refused.stdout


def test_the_install_pulled_no_torch_and_no_cuda_wheels_for_the_cpu_build():
    """Nothing pulled PyTorch; NVIDIA's CUDA wheels are there only with TensorFlow's CUDA build."""
    installed = {re.sub(r"[-_.]+", "-", d.metadata["Name"] or "").lower()
                 for d in importlib.metadata.distributions()}
    assert "voxtrace" in installed and "torch" not in installed
    if "tensorflow-cpu" in installed:
        assert not {name for name in installed if name.startswith("nvidia-")}


def test_training_prints_the_tensorflow_build_devices_and_strategy(capsys):
    import tensorflow as tf

    from voxtrace.cli import configure_logging
    from voxtrace.training.strategy import get_strategy

    configure_logging()  # as every command does
    get_strategy("cpu")
    line = capsys.readouterr().out.strip()
    build = "CUDA" if tf.test.is_built_with_cuda() else "CPU"
    assert line.startswith(f"> TensorFlow {tf.__version__} ({build} build) | devices ")
    for device in tf.config.list_logical_devices():
        assert device.name.split("device:")[-1] in line
    assert line.endswith(" | strategy OneDeviceStrategy, 1 replica")
