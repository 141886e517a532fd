import pytest

from loadtests.scenarios import (
    PROFILES, TRANSFORMER, closed_plan, estimate_seconds, get_profile, open_plan,
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
    """Five runtimes (AOTInductor serves the torch-source models only), no direct runs."""
    p = PROFILES["quick"]
    without = [(m, rt) for m in p.models if m not in TRANSFORMER for rt in p.runtimes if _served(m, rt)]
    closed = closed_plan(p, without)
    opened = open_plan(p, without, {m: 10.0 for m in p.models})
    # The quick profile's open-loop runs are the capacity search's steps (one model, 5 runtimes).
    assert len(closed) == 3 * (4 * 2 * 4 + 2 * 2) and opened == []
    assert {s.via for s in closed} == {"gateway"}
    n_capacity = sum(m in p.capacity_models for m, _ in without)
    assert n_capacity == 5
    assert estimate_seconds(p, len(closed) + 2, n_capacity) < 10 * 60
    assert len({s.run_id for s in closed}) == len(closed)
    # With the transformer pair in the store: 9 more targets at the reference concurrency only.
    targets = [(m, rt) for m in p.models for rt in p.runtimes if _served(m, rt)]
    closed = closed_plan(p, targets)
    extra = [s for s in closed if s.model in TRANSFORMER]
    assert len(extra) == 3 * 9 and {s.users for s in extra} == {p.ref_users}
    assert estimate_seconds(p, len(closed) + 3, n_capacity) < 12.5 * 60
    assert 0 < p.adaptive_s and p.repeats < p.max_repeats


def test_overrides():
    p = get_profile("quick", models=("digits-cnn-torch", "mobilenetv2-keras"), repeats=3)
    assert p.models == ("digits-cnn-torch", "mobilenetv2-keras") and p.repeats == 3
    assert p.capacity_models == ("digits-cnn-torch",)
    full = get_profile("full", models=("digits-cnn-torch", "digits-mlp-keras"))
    assert full.direct_models == ("digits-cnn-torch",) and set(full.capacity_models) == set(full.models)
    assert get_profile("full", models=("digits-mlp-keras",)).direct_models == ()
    with pytest.raises(ValueError, match="unknown profile"):
        get_profile("nope")
