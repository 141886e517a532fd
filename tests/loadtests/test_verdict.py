import numpy as np

from loadtests.report.aggregate import Spread, aggregate, outliers
from loadtests.report.stats import Method
from loadtests.report.verdict import AOTI_QUESTION as AOTI
from loadtests.report.verdict import compare, pairs, verdict
from tests.loadtests import synthetic

TIE = Method().tie_text()  # "tie (within 10%)"


class P:  # just the figures compare() reads
    def __init__(self, rps, p50=None):
        self.rps = Spread.of(rps)
        self.p50 = Spread.of(p50 or [1.0] * len(rps))
        self.runtime = f"rt{id(self)}"
        self.key = ("gateway", "closed", "m", self.runtime, 8, 0.0)


def test_a_clear_winner_is_named_with_its_ratio_and_interval():
    f = compare("A", P([100, 105, 102]), "B", P([200, 210, 204]), "rps")
    assert f.outcome == "b"
    assert f.headline.startswith("B 2.00× faster [") and "(3 vs 3 repeats)" in f.text
    lo, hi = (float(x) for x in f.headline.split("[")[1].rstrip("]").split("–"))
    assert 1.1 < lo < 2.0 < hi
    lat = compare("A", P([1, 1, 1], p50=[2.0, 2.1, 1.9]), "B", P([1, 1, 1], p50=[4.0, 4.1, 3.9]),
                  "p50")
    assert lat.outcome == "a" and lat.headline.startswith("A 2.00× lower latency [")


def test_the_same_distribution_is_a_tie_within_the_threshold():
    rng = np.random.default_rng(3)
    a, b = (list(1000 * np.exp(rng.normal(0, 0.02, 6))) for _ in range(2))
    f = compare("A", P(a), "B", P(b), "rps")
    assert f.outcome == "tie" and f.headline.startswith(TIE + ": ")
    wider = compare("A", P(a), "B", P(b), "rps", Method(negligible=0.01))
    assert wider.outcome == "inconclusive"  # the same data is not within 1%


def test_wide_noise_with_few_repeats_is_inconclusive_never_a_winner():
    f = compare("A", P([100, 160, 120]), "B", P([90, 150, 100]), "rps")  # +-30% noise
    assert f.outcome == "inconclusive"
    assert f.headline.startswith("inconclusive: needs ") and "more repeat" in f.headline
    assert f.more is None or f.more >= 1
    # One repeat a side shows no spread at all: never decided, whatever the gap.
    one = compare("A", P([100]), "B", P([300]), "rps")
    assert one.outcome == "inconclusive" and one.more == 2


def test_missing_point():
    assert compare("A", None, "B", P([1, 2, 3]), "rps").outcome == "missing"


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
    assert sum(f"{TIE}: 1.00×" in d for d in same["details"]) == 3
    assert any(d.startswith("TFLite: keras-src 1.50× faster [") for d in same["details"])
    assert [f["outcome"] for f in same["findings"]] == ["tie", "tie", "tie", "b"]
    native = by_q["Performance: a tie? (native runtimes)"]["digits-cnn"]
    assert native["answer"].startswith("No: TorchServe/digits-cnn-torch 1.33× faster [")
    # TorchServe 400x3 vs TF Serving (stand-in) 300x3 req/s, 2% spread: a clear winner.
    deploy = by_q["Deployment: is TF Serving faster than TorchServe?"]["digits-cnn"]
    assert deploy["answer"].startswith("No") and "TF Serving (stand-in)" in deploy["details"][0]
    assert by_q["Does ONNX Runtime beat both native runtimes?"]["mobilenetv2"]["answer"] == "Yes (4/4)"
    tflite = by_q["TFLite the lightest for edge?"]["digits-cnn"]
    assert tflite["answer"].startswith("Yes"), tflite
    # AOTInductor 700 vs TF Serving 300 (keras and torch model), TorchServe 400 and ONNX Runtime 900
    # (x3 at 8 users).
    aoti = by_q[AOTI]["digits-cnn"]
    assert aoti["answer"].startswith("Partly: AOTInductor faster 3, the other faster 1, tie (within 10%) 0 (of 4)")
    assert aoti["details"][0].startswith("AOTInductor/digits-cnn-torch 2.33× faster [")
    assert "TF Serving (stand-in)/digits-cnn-keras" in aoti["details"][0]
    assert aoti["details"][2].startswith("digits-cnn-torch: AOTInductor 1.75× faster [")
    assert aoti["details"][3].startswith("digits-cnn-torch: ONNX Runtime 1.29× faster [")


def test_aotinductor_not_measured_says_so():
    rows = verdict(synthetic.results())
    aoti = {r["question"]: r["cells"] for r in rows}[AOTI]
    assert aoti["digits-cnn"]["answer"] == "not measured"


def test_quantized_variants_do_not_enter_the_float_format_comparison():
    """A bench of `--runtimes tflite:int8-static` lists the variant's artifact too; TFLite's "smallest
    artifact" criterion still compares the float formats."""
    results = synthetic.results()
    for model in ("digits-cnn-torch", "digits-cnn-keras"):
        results["models"][model]["artifacts"]["onnx:int8-static"] = {"bytes": 100_000, "parity_ok": True, "route": "q"}
    tflite = {r["question"]: r["cells"] for r in verdict(results)}["TFLite the lightest for edge?"]["digits-cnn"]
    assert tflite["answer"].startswith("Yes"), tflite
    assert not any("int8" in d for d in tflite["details"])


def test_wide_spreads_make_answers_inconclusive_not_ties_or_winners():
    rows = verdict(synthetic.results(spread=0.6))
    cells = {r["question"]: r["cells"] for r in rows}
    deploy = cells["Deployment: is TF Serving faster than TorchServe?"]["digits-cnn"]
    assert deploy["answer"].startswith("Inconclusive (needs ")
    assert {f["outcome"] for f in deploy["findings"]} == {"inconclusive"}
    # What the interval cannot settle is left open; a 3x gap still shows through 60% noise.
    onnx = cells["Does ONNX Runtime beat both native runtimes?"]["digits-cnn"]
    assert {f["outcome"] for f in onnx["findings"]} <= {"a", "inconclusive"}


def test_the_threshold_is_a_setting():
    res = synthetic.results()
    native = lambda m: next(r for r in verdict(res, m)
                            if r["question"].endswith("(native runtimes)"))["cells"]["digits-cnn"]
    assert native(Method())["findings"][0]["outcome"] == "a"  # 1.33x beyond +-10%
    assert native(Method(negligible=0.3))["answer"].startswith("Inconclusive")  # [1.28-1.39]
    assert native(Method(negligible=0.5))["answer"].startswith("Yes: tie (within 50%): 1.33×")
