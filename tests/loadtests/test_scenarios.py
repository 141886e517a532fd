import pytest

from loadtests.scenarios import PROFILES, closed_plan, estimate_seconds, get_profile, open_plan


@pytest.mark.parametrize("profile", PROFILES.values(), ids=PROFILES.keys())
def test_profiles_are_consistent(profile):
    assert set(profile.direct_users) <= set(profile.users)
    assert set(profile.direct_models) <= set(profile.models)
    assert set(profile.open_models) <= set(profile.models)
    assert profile.ref_users in profile.users


def test_quick_plans_under_ten_minutes():
    p = PROFILES["quick"]
    targets = [(m, rt) for m in p.models for rt in p.runtimes]
    closed = closed_plan(p, targets)
    opened = open_plan(p, targets, {m: 10.0 for m in p.models})
    assert len(closed) == 3 * (16 * 2 + 4) and len(opened) == 3 * 4
    assert estimate_seconds(p, len(closed) + len(opened) + 2) < 10 * 60
    assert len({s.run_id for s in closed + opened}) == len(closed) + len(opened)


def test_overrides():
    p = get_profile("quick", models=("digits-cnn-torch", "mobilenetv2-keras"), repeats=3)
    assert p.models == ("digits-cnn-torch", "mobilenetv2-keras") and p.repeats == 3
    assert p.open_models == ("digits-cnn-torch",) == p.direct_models
    assert get_profile("quick", models=("mobilenetv2-keras",)).direct_models == ()
    with pytest.raises(ValueError, match="unknown profile"):
        get_profile("nope")
