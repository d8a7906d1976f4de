"""The fine-tuning loop on a tiny T5 (and a tiny GPT-Neo): the loss falls, early stopping keeps the best
validation weights, and a run killed after a checkpoint resumes to the same weights as an
uninterrupted run (a checkpoint with another fingerprint is ignored)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from cfqa.io.atomic_io import read_json
from cfqa.config import PROJECT_ROOT, TrainConfig, load, registry_options
from cfqa.methods.registry import get_method
from cfqa.stages.train import resume_fingerprint
from cfqa.training import loop as training_loop
from cfqa.training.batches import LengthGroupedBatches, fixed_sample
from cfqa.training.checkpoint import STATE
from cfqa.training.loop import fine_tune, make_accelerator, validation_loss
from conftest import tiny_t5

PAD, EOS = 0, 1


def train_config(**overrides) -> TrainConfig:
    values = dict(seed=0, threads=1, max_steps=12, batch_size=4, grad_accum_steps=1, optimizer="adamw",
                  lr=1e-2, weight_decay=0.0, warmup_steps=2, clip_norm=1.0, bf16=False,
                  gradient_checkpointing=False, eval_every=3, early_stopping_patience=0,
                  max_input_length=16, max_target_length=8, mixture=("factual",),
                  target_format="disentangled", device="cpu", batching="random", group_batches=25,
                  validation_examples=0, validation_seed=0)
    values.update(overrides)
    return TrainConfig(**values)


def random_inputs(rng: np.random.Generator, count: int) -> list[list[int]]:
    return [[int(t) for t in rng.integers(3, 96, size=8)] + [EOS] for _ in range(count)]


def reverse_task(count: int = 16) -> list[tuple[list[int], list[int]]]:
    """Target: the input's first four tokens reversed, a task a tiny T5 learns in steps."""
    return [(source, source[:4][::-1] + [EOS]) for source in random_inputs(np.random.default_rng(0), count)]


def varied_task(count: int = 16) -> list[tuple[list[int], list[int]]]:
    """The reverse task with inputs of 5-14 tokens, so length grouping reorders the examples."""
    rng = np.random.default_rng(2)
    sources = [[int(t) for t in rng.integers(3, 96, size=int(rng.integers(4, 14)))] + [EOS] for _ in range(count)]
    return [(source, source[:4][::-1] + [EOS]) for source in sources]


def build(method: str, **model_overrides):
    return get_method(method).build(tiny_t5(0, **model_overrides), registry_options(method))


def run(model, train, validation, cfg, checkpoint_dir, fingerprint="run-a"):
    return fine_tune(model, train, validation, cfg, pad_id=PAD, checkpoint_dir=checkpoint_dir,
                     fingerprint=fingerprint, accelerator=make_accelerator(cfg))


def same_weights(first, second) -> bool:
    a, b = first.state_dict(), second.state_dict()
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


class Killed(Exception):
    """Stands for the process dying right after a checkpoint was written."""


def kill_after_checkpoint_at(monkeypatch, step: int) -> None:
    save = training_loop.save_checkpoint

    def save_then_die(directory, model, optimizer, schedule, state, best_weights, fingerprint):
        save(directory, model, optimizer, schedule, state, best_weights, fingerprint)
        if state.step == step:
            raise Killed()

    monkeypatch.setattr(training_loop, "save_checkpoint", save_then_die)


@pytest.mark.parametrize("method, lr, ratio", [("full", 1e-2, 0.2), ("lora", 3e-2, 0.6)])
def test_loss_decreases_on_a_repeated_dataset(tmp_path, method, lr, ratio):
    data = reverse_task()
    model = build(method)
    frozen_before = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    cfg = train_config(max_steps=60, eval_every=20, lr=lr)
    result = run(model, data, data[:8], cfg, tmp_path / "ckpt")
    curve = result.state.curve
    # Measured: full 3.94 -> 0.37, LoRA 4.23 -> 1.73 (train loss of the first and last 10 steps).
    assert [p["step"] for p in curve] == [10, 20, 30, 40, 50, 60]
    assert curve[-1]["train_loss"] < ratio * curve[0]["train_loss"]
    val = [p["val_loss"] for p in curve if p["val_loss"] is not None]
    assert len(val) == 3 and val[0] > val[1] > val[2]
    assert (result.state.step, result.state.best_step, result.stopped_early) == (60, 60, False)
    assert result.state.best_val_loss == pytest.approx(val[-1])
    frozen_after = dict(model.named_parameters())
    assert all(torch.equal(frozen_after[n], before) for n, before in frozen_before.items())
    assert (len(frozen_before) > 0) == (method == "lora")


def test_early_stopping_keeps_the_best_validation_weights(tmp_path):
    """Validation targets use tokens the training targets never do: once the model has
    learned the training targets, validation only gets worse."""
    rng = np.random.default_rng(1)
    inputs = random_inputs(rng, 16)
    train = [(s, [int(t) for t in rng.integers(3, 40, size=6)] + [EOS]) for s in inputs]
    validation = [(s, [int(t) for t in rng.integers(60, 96, size=6)] + [EOS]) for s in inputs[:8]]
    cfg = train_config(max_steps=100, eval_every=2, early_stopping_patience=2)
    model = build("full")
    result = run(model, train, validation, cfg, tmp_path / "ckpt")
    state = result.state
    assert result.stopped_early and state.step < cfg.max_steps
    assert state.bad_evaluations == cfg.early_stopping_patience
    assert state.step - state.best_step == cfg.early_stopping_patience * cfg.eval_every
    later = [p["val_loss"] for p in state.curve if p["val_loss"] is not None and p["step"] > state.best_step]
    assert len(later) == 2 and all(loss >= state.best_val_loss for loss in later)
    # The returned model is the best one, not the last one.
    returned_loss = validation_loss(model, validation, 4, PAD, make_accelerator(cfg))
    assert returned_loss == pytest.approx(state.best_val_loss, abs=1e-6)


@pytest.mark.parametrize("method, model_overrides", [("full", {"dropout_rate": 0.2}), ("lora", {})])
def test_killed_run_resumes_to_the_same_weights(tmp_path, monkeypatch, method, model_overrides):
    data = varied_task()
    cfg = train_config()  # 12 steps (three epochs of 4 batches), a checkpoint every 3
    uninterrupted = build(method, **model_overrides)
    expected = run(uninterrupted, data, data[:8], cfg, tmp_path / "uninterrupted")

    checkpoint = tmp_path / "killed"
    with monkeypatch.context() as patch:
        kill_after_checkpoint_at(patch, 6)
        with pytest.raises(Killed):
            run(build(method, **model_overrides), data, data[:8], cfg, checkpoint)
    assert read_json(checkpoint / STATE)["step"] == 6

    # A new process: fresh base model and global RNG; the checkpoint restores the rest.
    resumed_model = build(method, **model_overrides)
    torch.manual_seed(12345)
    resumed = run(resumed_model, data, data[:8], cfg, checkpoint)
    assert resumed.resumed_from_step == 6 and resumed.state.step == 12
    assert same_weights(resumed_model, uninterrupted)
    assert resumed.state.curve == expected.state.curve
    assert resumed.state.best_val_loss == expected.state.best_val_loss


def test_a_run_paused_at_rungs_resumes_on_the_full_schedule_to_the_same_weights(tmp_path):
    """What `tune` does: stop at step 4, then 7 (weights of that step, not the best ones), then
    finish; the schedule is the one of max_steps throughout, so the end equals one straight run."""
    data = varied_task()
    cfg = train_config(eval_every=12)                      # validation only at the pauses and the end
    straight_model = build("full", dropout_rate=0.2)
    straight = run(straight_model, data, data[:8], cfg, tmp_path / "straight")

    paused_dir = tmp_path / "paused"
    for stop in (4, 7):
        model = build("full", dropout_rate=0.2)
        if stop > 4:
            torch.manual_seed(999)                          # a later call: the checkpoint restores the RNG
        result = fine_tune(model, data, data[:8], cfg, pad_id=PAD, checkpoint_dir=paused_dir, fingerprint="run-a",
                           accelerator=make_accelerator(cfg), stop_at=stop)
        assert result.state.step == stop and read_json(paused_dir / STATE)["step"] == stop
        assert [p["step"] for p in result.state.curve if p["val_loss"] is not None][-1] == stop
        # A paused run keeps its current weights: they score the validation loss just measured.
        assert validation_loss(model, data[:8], 4, PAD, make_accelerator(cfg)) == pytest.approx(
            result.state.curve[-1]["val_loss"], abs=1e-6)
    # The learning rate at the pause is the full schedule's (warmup 2, linear decay to 0 at 12).
    optimizer_state = torch.load(paused_dir / "optimizer.pt", weights_only=True)
    assert optimizer_state["schedule"]["_last_lr"][0] == pytest.approx(cfg.lr * (12 - 7) / (12 - 2))
    finished_model = build("full", dropout_rate=0.2)
    finished = run(finished_model, data, data[:8], cfg, paused_dir)
    assert finished.resumed_from_step == 7 and finished.state.step == 12
    # Step 12 is the same point of the same trajectory: its validation loss is bit-identical (the
    # best weights each run ends on may differ: the paused run also validated at steps 4 and 7).
    assert finished.state.curve[-1]["val_loss"] == straight.state.curve[-1]["val_loss"]
    if finished.state.best_step == 12:
        assert same_weights(finished_model, straight_model)


def test_the_loop_trains_on_length_grouped_batches_in_their_order(tmp_path, monkeypatch):
    data = varied_task()
    cfg = train_config(max_steps=8, eval_every=100, batching="length", group_batches=25)
    seen = []
    collate = training_loop.collate
    monkeypatch.setattr(training_loop, "collate",
                        lambda batch, pad, family: seen.append(batch) or collate(batch, pad, family))
    run(build("full"), data, data[:4], cfg, tmp_path / "ckpt")
    grouped = LengthGroupedBatches(data, cfg.batch_size, cfg.seed, 25)
    assert seen[:8] == [grouped(i) for i in range(8)]
    # Each batch comes from one length-sorted chunk: the epoch's 16 examples sorted by length.
    widths = sorted(max(len(source) for source, _ in batch) for batch in seen[:4])
    by_length = sorted(len(source) for source, _ in data)
    assert widths == [by_length[3], by_length[7], by_length[11], by_length[15]]


def test_epoch_times_sum_the_steps_of_each_complete_epoch():
    steps = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]
    # 3 sampler batches per epoch, one per step: epochs 0-2, 3-5 complete; step 6 starts a third.
    assert training_loop.epoch_times(steps, 1, 3) == (6.0, 15.0)
    # Two micro-batches per step (accumulation or processes): step s starts at batch 2s, so
    # steps 0 and 1 (batches 0-3, the second starting in epoch 0) make epoch 0, step 2
    # (batch 4) epoch 1, steps 3 and 4 (batches 6, 8) epoch 2, step 5 (batch 10) epoch 3;
    # step 6 starts epoch 4, which the 14 batches do not complete.
    assert training_loop.epoch_times(steps, 2, 3) == (1.0 + 2.0, 3.0, 4.0 + 5.0, 6.0)
    assert training_loop.epoch_times(steps[:2], 1, 3) == ()
    with pytest.raises(ValueError, match="batches per epoch"):
        training_loop.epoch_times(steps, 1, 0)


def test_the_loop_records_each_epoch_s_training_time(tmp_path, monkeypatch):
    """12 steps over 16 examples in batches of 4 are three epochs of four steps; an epoch's
    time is the sum of its steps' times, the ones step_time_s averages."""
    data = varied_task()
    result = run(build("full"), data, data[:4], train_config(), tmp_path / "ckpt")
    seconds = result.state.step_seconds
    assert len(seconds) == 12
    assert result.epoch_times_s == pytest.approx((sum(seconds[0:4]), sum(seconds[4:8]), sum(seconds[8:12])))
    assert result.max_epoch_time_s == max(result.epoch_times_s)
    short = run(build("full"), data, data[:4], train_config(max_steps=3), tmp_path / "short")
    assert short.epoch_times_s == () and short.max_epoch_time_s is None


def test_validation_loss_is_the_token_weighted_mean_whatever_the_batch_size():
    data = varied_task()
    model = build("full")
    accelerator = make_accelerator(train_config())
    per_example = [(validation_loss(model, [example], 1, PAD, accelerator), len(example[1])) for example in data]
    expected = sum(loss * tokens for loss, tokens in per_example) / sum(tokens for _, tokens in per_example)
    for batch_size in (3, 16):
        assert validation_loss(model, data, batch_size, PAD, accelerator) == pytest.approx(expected, rel=1e-6)


def test_checkpoint_with_another_fingerprint_is_ignored(tmp_path, monkeypatch):
    data = reverse_task()
    cfg = train_config()
    uninterrupted = build("full")
    run(uninterrupted, data, data[:8], cfg, tmp_path / "uninterrupted")
    checkpoint = tmp_path / "killed"
    with monkeypatch.context() as patch:
        kill_after_checkpoint_at(patch, 6)
        with pytest.raises(Killed):
            run(build("full"), data, data[:8], cfg, checkpoint, fingerprint="settings-a")
    restarted = build("full")
    result = run(restarted, data, data[:8], cfg, checkpoint, fingerprint="settings-b")
    assert result.resumed_from_step == 0 and result.state.step == 12
    assert same_weights(restarted, uninterrupted)
    assert read_json(checkpoint / STATE)["fingerprint"] == "settings-b"


def test_a_longer_run_is_not_the_continuation_of_a_shorter_one(tmp_path):
    """The schedule decays to zero at cfg.max_steps, so N/2 steps then N steps on one
    checkpoint resumes (the loop cannot tell) but is not the N-step run: the train stage must
    and does put max_steps in the fingerprint."""
    data = reverse_task()
    cfg = train_config()
    uninterrupted = build("full")
    run(uninterrupted, data, data[:8], cfg, tmp_path / "uninterrupted")
    checkpoint = tmp_path / "shared"
    run(build("full"), data, data[:8], dataclasses.replace(cfg, max_steps=6), checkpoint)
    continued = build("full")
    result = run(continued, data, data[:8], cfg, checkpoint)
    assert result.resumed_from_step == 6 and result.state.step == 12
    assert not same_weights(continued, uninterrupted)

    method = load([PROJECT_ROOT / "params.yaml"]).method("full", 0)
    shorter = dataclasses.replace(method, train=dataclasses.replace(method.train, max_steps=6))
    assert resume_fingerprint(shorter, "data", "backbone") != resume_fingerprint(method, "data", "backbone")


def test_a_checkpoint_resumes_only_on_the_same_backbone_data_and_seed():
    cfg = load([PROJECT_ROOT / "params.yaml"])
    method = cfg.method("full", 0)
    same = resume_fingerprint(method, "data", "backbone")
    assert resume_fingerprint(cfg.method("full", 1), "data", "backbone") != same
    assert resume_fingerprint(method, "data", "backbone") == same
    assert resume_fingerprint(method, "data", "another backbone") != same
    assert resume_fingerprint(method, "other data", "backbone") != same


def tiny_gpt_neo(seed: int = 0):
    from transformers import GPTNeoConfig, GPTNeoForCausalLM

    torch.manual_seed(seed)
    config = GPTNeoConfig(vocab_size=100, max_position_embeddings=64, hidden_size=32, num_layers=2, num_heads=4,
                          attention_types=[[["global"], 2]], intermediate_size=64, embed_dropout=0.0,
                          attention_dropout=0.0, resid_dropout=0.0, bos_token_id=EOS, eos_token_id=EOS,
                          pad_token_id=PAD)
    return GPTNeoForCausalLM(config)


def test_a_causal_model_trains_and_validates_on_causal_batches(tmp_path):
    """A decoder-only model reads input + target as one sequence with the loss on the target:
    the loop and the validation loss lay batches out by the model's family."""
    from cfqa.model.model_family import ModelFamily
    from cfqa.training.batches import collate

    data = reverse_task()
    model = tiny_gpt_neo()
    accelerator = make_accelerator(train_config())
    with torch.no_grad():
        batch = collate(data, PAD, ModelFamily.CAUSAL)
        expected = float(model.eval()(**batch).loss)     # one batch: the mean over every target token
    assert validation_loss(model, data, len(data), PAD, accelerator) == pytest.approx(expected, rel=1e-5)

    cfg = train_config(max_steps=30, eval_every=10)
    result = run(model, data, data[:8], cfg, tmp_path / "ckpt")
    losses = [p["train_loss"] for p in result.state.curve]
    assert result.state.step == 30 and losses[-1] < 0.8 * losses[0]
    assert result.state.best_val_loss < expected


def test_a_checkpoint_keeps_a_second_copy_of_the_weights_only_while_the_best_are_older(tmp_path, monkeypatch):
    """Early stopping's run: validation improves, then only gets worse. While the best weights
    are the current ones no best file is written; once they are older they are written once and
    hard-linked into every later checkpoint; a run killed then resumes to the same weights."""
    rng = np.random.default_rng(1)
    inputs = random_inputs(rng, 16)
    train = [(s, [int(t) for t in rng.integers(3, 40, size=6)] + [EOS]) for s in inputs]
    validation = [(s, [int(t) for t in rng.integers(60, 96, size=6)] + [EOS]) for s in inputs[:8]]
    cfg = train_config(max_steps=100, eval_every=2, early_stopping_patience=3)
    expected = run(build("full"), train, validation, cfg, tmp_path / "reference")
    best = expected.state.best_step
    assert expected.stopped_early and best < expected.state.step

    saves = []
    save = training_loop.save_checkpoint

    def record(directory, model, optimizer, schedule, state, best_weights, fingerprint):
        save(directory, model, optimizer, schedule, state, best_weights, fingerprint)
        files = {p.name: p.stat().st_ino for p in directory.iterdir()}
        saves.append((state.step, state.best_step, files))
        if state.step == best + 2 * cfg.eval_every:
            raise Killed()

    monkeypatch.setattr(training_loop, "save_checkpoint", record)
    model = build("full")
    with pytest.raises(Killed):
        run(model, train, validation, cfg, tmp_path / "ckpt")
    for step, best_step, files in saves:
        assert ("best.safetensors" in files) == (step != best_step)
        assert {"trainable.safetensors", "optimizer.pt", "state.json"} <= set(files)
    older = [files["best.safetensors"] for step, best_step, files in saves if step != best_step]
    assert len(older) == 2 and older[0] == older[1]          # written once, then hard-linked
    extra = torch.load(tmp_path / "ckpt" / "optimizer.pt", weights_only=True)
    assert set(extra) == {"optimizer", "schedule", "rng"}     # no weights in the optimizer file

    monkeypatch.setattr(training_loop, "save_checkpoint", save)
    resumed_model = build("full")
    resumed = run(resumed_model, train, validation, cfg, tmp_path / "ckpt")
    assert resumed.state.curve == expected.state.curve and resumed.state.best_step == best
    reference_model = build("full")
    run(reference_model, train, validation, cfg, tmp_path / "again")
    assert same_weights(resumed_model, reference_model)


def test_on_an_accelerator_the_host_reads_the_loss_at_curve_points_only(tmp_path, monkeypatch):
    """With the host's reads ten steps apart (what an accelerator gets), the run is the same
    and a non-finite loss is still reported at the step it happened, once the window is read."""
    data = varied_task()
    cfg = train_config(max_steps=20, eval_every=10)
    every_step = run(build("full"), data, data[:4], cfg, tmp_path / "a")
    reads = []
    tolist = torch.Tensor.tolist

    def counted_tolist(tensor):
        values = tolist(tensor)
        reads.append(len(values) if isinstance(values, list) else 0)
        return values

    monkeypatch.setattr(training_loop, "host_read_interval", lambda device: training_loop.LOG_EVERY)
    monkeypatch.setattr(torch.Tensor, "tolist", counted_tolist)
    windowed = run(build("full"), data, data[:4], cfg, tmp_path / "b")
    monkeypatch.setattr(torch.Tensor, "tolist", tolist)
    assert reads == [10, 10] and windowed.state.curve == every_step.state.curve
    assert len(windowed.state.step_seconds) == 20

    model = build("full")
    calls = [0]
    forward = model.forward

    def nan_at_step_three(*args, **kwargs):
        calls[0] += 1
        output = forward(*args, **kwargs)
        if calls[0] == 3 and model.training:
            output.loss = output.loss * float("nan")
        return output

    model.forward = nan_at_step_three
    with pytest.raises(FloatingPointError, match="training loss is nan at step 3"):
        run(model, data, data[:4], train_config(max_steps=20, eval_every=10), tmp_path / "c")


def test_validation_uses_the_fixed_sample_and_scores_the_best_weights_on_the_whole_set(tmp_path):
    data, validation = varied_task(), reverse_task(24)
    cfg = train_config(max_steps=6, eval_every=3, validation_examples=8, validation_seed=5)
    model = build("full")
    result = run(model, data, validation, cfg, tmp_path / "ckpt")
    sample = fixed_sample(validation, 8, 5)
    assert result.validation_examples == 8 and result.validation_seconds > 0
    accelerator = make_accelerator(cfg)
    assert result.state.best_val_loss == pytest.approx(validation_loss(model, sample, 4, PAD, accelerator), abs=1e-6)
    assert result.full_validation_loss == pytest.approx(validation_loss(model, validation, 4, PAD, accelerator),
                                                        abs=1e-6)
    whole = run(build("full"), data, validation, train_config(max_steps=6, eval_every=3), tmp_path / "whole")
    assert whole.validation_examples == 24 and whole.full_validation_loss is None
