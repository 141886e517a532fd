import pytest

from loadtests.scenarios import (
    PROFILES, closed_plan, estimate_seconds, get_profile, open_plan,
)


@pytest.mark.parametrize("profile", PROFILES.values(), ids=PROFILES.keys())
def test_profiles_are_consistent(profile):
    assert set(profile.direct_users) <= set(profile.users)
    assert set(profile.direct_models) <= set(profile.models)
    assert set(profile.open_models) <= set(profile.models)
    assert set(profile.ref_only_models) <= set(profile.models)
    assert set(profile.capacity_models) <= set(profile.models)
    assert 0 < profile.capacity_range[0] < profile.capacity_range[1]
    assert profile.ref_users in profile.users


def _served(model: str, runtime: str) -> bool:
    """Keras sources have no AOTInductor package (no route without onnx2torch)."""
    return not (runtime == "aotinductor" and model.endswith("-keras"))


def test_quick_plans_under_ten_minutes():
    """Five runtimes (AOTInductor serves the torch-source models only; ExecuTorch, an edge
    runtime, is measured in-process), no direct runs, a 1-user point for the capacity model only."""
    p = PROFILES["quick"]
    assert "executorch" not in p.runtimes and len(p.runtimes) == 5
    targets = [(m, rt) for m in p.models for rt in p.runtimes if _served(m, rt)]
    closed = closed_plan(p, targets)
    assert open_plan(p, targets, {m: 10.0 for m in p.models}) == []
    assert {s.via for s in closed} == {"gateway"}
    assert {s.model for s in closed if s.users == 1} == set(p.capacity_models) == {"digits-cnn-torch"}
    # 3 repeats x (5 targets x 2 points + 22 targets at the reference concurrency).
    assert len(closed) == 3 * (5 * 2 + 22) and len({s.run_id for s in closed}) == len(closed)
    n_capacity = sum(m in p.capacity_models for m, _ in targets)
    assert n_capacity == 5
    # + one ceiling run per payload size (digits, MobileNetV2, the transformer's sequences).
    assert estimate_seconds(p, len(closed) + 3, n_capacity, len(p.models)) < 9.75 * 60
    assert 0 < p.adaptive_s and p.repeats < p.max_repeats


def test_a_users_own_model_gets_the_sweep_and_the_capacity_search():
    p = get_profile("quick", models=("my-model",))
    assert p.users_of("my-model") == (1, 8) and p.capacity_models == ("my-model",)
    assert get_profile("quick", models=("my-model",), capacity_models=()).capacity_models == ()


def test_overrides():
    p = get_profile("quick", models=("digits-cnn-torch", "mobilenetv2-keras"), repeats=3)
    assert p.models == ("digits-cnn-torch", "mobilenetv2-keras") and p.repeats == 3
    assert p.capacity_models == ("digits-cnn-torch",)
    full = get_profile("full", models=("digits-cnn-torch", "digits-mlp-keras"))
    assert full.direct_models == ("digits-cnn-torch",) and set(full.capacity_models) == set(full.models)
    assert get_profile("full", models=("digits-mlp-keras",)).direct_models == ()
    with pytest.raises(ValueError, match="unknown profile"):
        get_profile("nope")
