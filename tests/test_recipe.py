"""The whole recipe on a minuscule config: it finishes, it resumes to the bit, and a corrupt
stage is rerun alone."""

import json

import pytest

from qwenlab import recipe
from qwenlab import train as qtrain


def outputs(r):
    return {stage: r.record(stage)["output"] for stage in recipe.STAGES}


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """One uninterrupted run: the reference for every test below."""
    r = recipe.Recipe("test", run_dir=tmp_path_factory.mktemp("straight"), progress=False)
    results = r.run()
    return r, results


def test_the_pipeline_finishes_and_reports_every_stage(straight):
    r, results = straight
    assert list(results["stages"]) == list(recipe.STAGES)
    saved = json.loads((r.run_dir / "results.json").read_text())
    assert saved == json.loads(json.dumps(results))
    for stage in recipe.POLICY_STAGES:
        row = results["stages"][stage]
        assert row["heldout_loss"] > 0 and 0 <= row["pair_accuracy"] <= 1
        assert set(row["task_accuracy"]) >= {"all", "add", "json"}
        assert row["wall_s"] >= 0
    assert 0 <= results["stages"]["reward"]["pair_accuracy"] <= 1
    assert results["stages"]["filter"]["kept"] <= results["stages"]["filter"]["chunks"]
    assert {"python", "torch", "transformers"} <= set(results["environment"])
    assert all(r.is_complete(stage) for stage in recipe.STAGES)
    assert "iterate" in recipe.format_table(results)


def test_raw_data_keeps_every_chunk(tmp_path):
    r = recipe.Recipe("test", data="raw", run_dir=tmp_path, progress=False)
    r.run(until="filter", measure=False)
    metrics = r.record("filter")["metrics"]
    assert metrics["kept"] == metrics["chunks"]


def test_resume_after_interruptions_gives_identical_results(straight, tmp_path, monkeypatch):
    reference, _ = straight
    r = recipe.Recipe("test", run_dir=tmp_path, progress=False)

    # killed in the middle of pretraining, after its step-2 checkpoint
    real_train = qtrain.train

    def interrupted_train(*args, **kwargs):
        real_train(*args, **{**kwargs, "stop_at": 2})
        raise KeyboardInterrupt

    monkeypatch.setattr(qtrain, "train", interrupted_train)
    with pytest.raises(KeyboardInterrupt):
        r.run()
    assert r.is_complete("filter") and not r.is_complete("pretrain")
    assert qtrain.latest_checkpoint(r.stage_dir("pretrain") / "checkpoints") is not None
    monkeypatch.setattr(qtrain, "train", real_train)

    # killed again, at the start of DPO
    real_dpo = recipe.Recipe.stage_dpo
    monkeypatch.setattr(recipe.Recipe, "stage_dpo",
                        lambda self: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        r.run()
    assert r.is_complete("reward") and not r.is_complete("dpo")
    monkeypatch.setattr(recipe.Recipe, "stage_dpo", real_dpo)

    r.run()
    assert outputs(r) == outputs(reference)


def test_a_corrupt_stage_is_detected_and_rerun_alone(straight, tmp_path, monkeypatch):
    import shutil

    reference, _ = straight
    shutil.copytree(reference.run_dir, tmp_path, dirs_exist_ok=True)
    r = recipe.Recipe("test", run_dir=tmp_path, progress=False)
    path = r.stage_dir("sft") / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF                          # one flipped byte inside a tensor
    path.write_bytes(bytes(data))
    with pytest.raises(recipe.StageError, match="corrupt"):
        r.load("sft")
    assert not r.is_complete("sft")
    assert all(r.is_complete(s) for s in recipe.STAGES if s != "sft")

    ran = []
    for stage in recipe.STAGES:
        method = getattr(recipe.Recipe, f"stage_{stage}")
        monkeypatch.setattr(recipe.Recipe, f"stage_{stage}",
                            lambda self, m=method, s=stage: (ran.append(s), m(self))[1])
    r.run()
    assert ran == ["sft"]
    assert outputs(r) == outputs(reference)


def test_a_stage_whose_input_changed_is_stale(straight, tmp_path):
    import shutil

    reference, _ = straight
    shutil.copytree(reference.run_dir, tmp_path, dirs_exist_ok=True)
    r = recipe.Recipe("test", run_dir=tmp_path, progress=False)
    rec = json.loads((r.stage_dir("sft") / "stage.json").read_text())
    rec["output"] = "0" * 64                    # as if the SFT stage had produced another model
    (r.stage_dir("sft") / "stage.json").write_text(json.dumps(rec))
    assert not r.is_complete("sft")
    assert not r.is_complete("dpo") and not r.is_complete("reward")
    assert r.is_complete("pretrain")


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="unknown scale"):
        recipe.Recipe("huge")
    with pytest.raises(ValueError, match="filtered"):
        recipe.Recipe("test", data="clean")


def test_changed_settings_make_a_stage_stale(straight, tmp_path, monkeypatch):
    import copy
    import shutil

    reference, _ = straight
    shutil.copytree(reference.run_dir, tmp_path, dirs_exist_ok=True)
    configs = copy.deepcopy(recipe.STAGE_CONFIGS)
    configs["test"]["dpo"]["beta"] = 0.5
    monkeypatch.setattr(recipe, "STAGE_CONFIGS", configs)
    r = recipe.Recipe("test", run_dir=tmp_path, progress=False)
    assert r.is_complete("sft") and r.is_complete("reward")
    assert not r.is_complete("dpo") and not r.is_complete("iterate")


def test_the_moe_column_trains_an_moe_model_of_the_same_active_width(tmp_path):
    dense = recipe.Recipe("test", progress=False).model_config()
    r = recipe.Recipe("test", moe=True, run_dir=tmp_path, progress=False)
    cfg = r.model_config()
    assert cfg.num_experts > 0
    active = cfg.num_experts_per_tok * cfg.moe_intermediate_size \
        + cfg.shared_expert_intermediate_size
    assert active == dense.intermediate_size
    results = r.run(until="sft")
    assert r.load("sft").config.num_experts == cfg.num_experts
    assert results["moe"] and results["stages"]["sft"]["heldout_loss"] > 0


def test_pretraining_mixes_in_task_text_but_never_an_eval_prompt(straight):
    r, _ = straight
    docs = r.task_text(2000)
    _, evals = r.task_splits()
    lines = {line for doc in docs for line in doc.split("\n")}
    assert sum(len(r.tokenizer()(d)["input_ids"]) + 1 for d in docs) >= 2000
    assert not any(f"{ex.prompt} {ex.answer}" in lines for ex in evals)
    metrics = r.record("pretrain")["metrics"]
    share = metrics["task_text_tokens"] / metrics["train_tokens"]
    assert abs(share - recipe.STAGE_CONFIGS["test"]["data"]["task_text"]) < 0.1


def test_a_rerun_with_other_settings_does_not_resume_the_old_checkpoints(straight, tmp_path,
                                                                        monkeypatch):
    import copy
    import shutil

    reference, _ = straight
    shutil.copytree(reference.run_dir, tmp_path, dirs_exist_ok=True)
    configs = copy.deepcopy(recipe.STAGE_CONFIGS)
    configs["test"]["data"]["task_text"] = 0.5          # other pretraining data, same steps
    monkeypatch.setattr(recipe, "STAGE_CONFIGS", configs)
    r = recipe.Recipe("test", run_dir=tmp_path, progress=False)
    r.run(until="pretrain", measure=False)
    history = r.record("pretrain")["metrics"]["history"]
    assert history["step"] == list(range(1, configs["test"]["pretrain"]["max_steps"] + 1))
    assert r.record("pretrain")["output"] != reference.record("pretrain")["output"]
