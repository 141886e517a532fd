from loadtests.report.aggregate import Spread, aggregate, outliers
from loadtests.report.verdict import NO_DIFF, compare, pairs, verdict
from tests.loadtests import synthetic


class P:  # just the figures compare() reads
    def __init__(self, rps, p50=1.0):
        self.rps, self.p50 = Spread.of(rps), Spread.of([p50, p50])


def test_overlapping_spreads_are_no_measurable_difference():
    f = compare("A", P([100, 110, 120]), "B", P([115, 125, 130]), "rps")
    assert f.outcome == "tie" and f.text.startswith(NO_DIFF)
    assert "110.0 [100.0–120.0]" in f.text and "125.0 [115.0–130.0]" in f.text  # medians


def test_clear_winner_is_named_with_its_figures():
    f = compare("A", P([100, 105]), "B", P([200, 210]), "rps")
    assert f.outcome == "b"
    assert f.text.startswith("B faster (2.00×)") and "102.5" in f.text and "205.0" in f.text
    lat = compare("A", P([1], p50=2.0), "B", P([1], p50=4.0), "p50")
    assert lat.outcome == "a" and "lower latency" in lat.text


def test_missing_point():
    assert compare("A", None, "B", P([1, 2]), "rps").outcome == "missing"


def test_aggregate_groups_repeats():
    points = aggregate(synthetic.results(repeats=3))
    p = next(p for p in points if (p.via, p.model, p.runtime, p.users) ==
             ("gateway", "digits-cnn-torch", "onnxruntime", 8) and p.mode == "closed")
    assert p.rps.n == 3 and p.rps.min < p.rps.max and p.rps.min <= p.rps.median <= p.rps.max


def test_point_value_is_the_median_so_one_slowed_repeat_does_not_move_it():
    res = synthetic.results(repeats=3, spread=0.0)
    key = ("gateway", "closed", "digits-cnn-torch", "onnxruntime", 8)
    for r in res["runs"]:
        if (r["via"], r["mode"], r["model"], r["runtime"], r["users"]) == key and r["repeat"] == 2:
            r["rps"] /= 2  # one window on a slowed machine: half the requests
            r["latency_ms"]["p50"] *= 2
    p = next(p for p in aggregate(res) if (p.via, p.mode, p.model, p.runtime, p.users) == key)
    assert p.rps.median == synthetic.rps_of("digits-cnn-torch", "onnxruntime", 8)
    assert p.rps.min == p.rps.median / 2 and p.p50.max == 2 * p.p50.median


def test_outliers_name_the_repeat_the_median_ignores():
    res = synthetic.results(repeats=3, spread=0.05)
    assert outliers(res) == []  # 5% jitter is no outlier
    slow = next(r for r in res["runs"] if r["via"] == "gateway" and r["repeat"] == 3)
    slow["rps"] /= 2
    (found,) = outliers(res)
    point = slow["id"].rsplit("-rep", 1)[0]
    same = [r["rps"] for r in res["runs"] if r["id"].rsplit("-rep", 1)[0] == point]
    assert found[0] is slow and len(same) == 3 and found[1] == sorted(same)[1] > slow["rps"]
    assert outliers(synthetic.results(repeats=2, spread=0.5)) == []  # no median of two


def test_verdict_answers_every_claim_for_both_architectures():
    rows = verdict(synthetic.with_aotinductor(synthetic.results()))
    assert set(pairs(synthetic.results())) == {"digits-cnn", "mobilenetv2"}
    by_q = {r["question"]: r["cells"] for r in rows}
    assert len(rows) == 6
    for cells in by_q.values():
        assert set(cells) == {"digits-cnn", "mobilenetv2"}
        for cell in cells.values():
            assert cell["answer"] != "not measured" and cell["details"]
    same = by_q["Performance: a tie? (same runtime)"]["digits-cnn"]
    # TFLite: the keras-source artifact is 1.5x faster; the other runtimes tie.
    assert same["answer"].startswith("No: ")
    assert sum(NO_DIFF in d for d in same["details"]) == 3
    assert any(d.startswith("TFLite: keras-src faster") for d in same["details"])
    native = by_q["Performance: a tie? (native runtimes)"]["digits-cnn"]
    assert native["answer"] == "No: TorchServe/digits-cnn-torch faster (1.33×)"
    # TorchServe 400x3 vs TF Serving (stand-in) 300x3 req/s, 2% spread: a clear winner.
    deploy = by_q["Deployment: is TF Serving faster than TorchServe?"]["digits-cnn"]
    assert deploy["answer"].startswith("No") and "TF Serving (stand-in)" in deploy["details"][0]
    assert by_q["Does ONNX Runtime beat both native runtimes?"]["mobilenetv2"]["answer"] == "Yes (4/4)"
    tflite = by_q["TFLite the lightest for edge?"]["digits-cnn"]
    assert tflite["answer"].startswith("Yes"), tflite
    # AOTInductor 700 vs TorchServe 400 and ONNX Runtime 900 (x3 at 8 users): one each way.
    aoti = by_q["Does PyTorch's compiled path (AOTInductor) beat TorchServe?"]["digits-cnn"]
    assert aoti["answer"] == "Partly: AOTInductor faster 1, the other faster 1, no measurable difference 0 (of 2)"
    assert aoti["details"][0].startswith("digits-cnn-torch: AOTInductor faster (1.75×)")
    assert aoti["details"][1].startswith("digits-cnn-torch: ONNX Runtime faster (1.29×)")


def test_aotinductor_not_measured_says_so():
    rows = verdict(synthetic.results())
    aoti = {r["question"]: r["cells"] for r in rows}["Does PyTorch's compiled path (AOTInductor) beat TorchServe?"]
    assert aoti["digits-cnn"]["answer"] == "not measured"


def test_wide_spreads_turn_differences_into_ties():
    rows = verdict(synthetic.results(spread=0.6))
    deploy = {r["question"]: r["cells"] for r in rows}["Deployment: is TF Serving faster than TorchServe?"]
    assert deploy["digits-cnn"]["answer"] == f"No: {NO_DIFF} (3/3)"
