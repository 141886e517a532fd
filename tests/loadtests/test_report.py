import json

from loadtests.report.build import build_report
from tests.loadtests import synthetic


def test_report_from_synthetic_results(tmp_path):
    path = tmp_path / "results.json"
    path.write_text(json.dumps(synthetic.results()))
    html = build_report(path)
    md = (tmp_path / "report.md").read_text()
    page = html.read_text()
    plots = sorted(p.name for p in (tmp_path / "plots").glob("*.png"))
    assert plots == ["artifacts.png", "gateway_overhead.png", "latency_digits-cnn-keras.png",
                     "latency_digits-cnn-torch.png", "latency_mobilenetv2-keras.png",
                     "latency_mobilenetv2-torch.png", "memory.png", "throughput.png"]
    assert all((tmp_path / "plots" / p).stat().st_size > 5000 for p in plots)
    for name in plots:
        assert f"plots/{name}" in md and f'src="plots/{name}"' in page
    for section in ("## Client ceiling", "## Verdict", "## Throughput at 8 users",
                    "## Gateway overhead", "## Memory and start-up", "## Artifact sizes",
                    "## Fixed rate (open loop)", "## Environment"):
        assert section in md
    verdict_rows = [line for line in md.splitlines() if line.startswith("| Performance: a tie?")
                    or line.startswith("| Deployment") or line.startswith("| TFLite the")
                    or line.startswith("| Does ONNX")]
    assert len(verdict_rows) == 5 and not any("not measured" in r for r in verdict_rows)
    assert "TF Serving (stand-in)" in md and "NOT the real C++ TensorFlow Serving" in md
    assert "not measured" in md  # TorchServe start-up is absent from the state file
    assert "<strong>Yes (4/4)</strong>" in page and "<script" not in page


def test_report_has_a_transformer_column_measured_at_the_reference_concurrency_only(tmp_path):
    """The quick profile runs the transformer pair at ref_users only (scenarios.ref_only_models):
    the report still gives it its own verdict column and throughput rows."""
    results = synthetic.results()
    pair = ("digits-transformer-torch", "digits-transformer-keras")
    for rep in (1, 2):
        for model in pair:
            for rt in synthetic.RUNTIMES:
                rps = synthetic.BASE_RPS[rt] * (0.2 if model.endswith("torch") else 0.25)
                results["runs"].append(synthetic.run("gateway", "closed", model, rt, 8, rep, rps))
    for model in pair:
        results["models"][model] = {**results["models"]["digits-cnn-torch"],
                                    "architecture": "digits-transformer"}
        results["ceilings"][model] = 5000.0
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    build_report(path)
    md = (tmp_path / "report.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| question"))
    assert "digits-transformer" in header
    section = md.split("## Throughput at 8 users")[1].split("\n## ")[0]
    assert "digits-transformer-torch" in section and "digits-transformer-keras" in section


def test_report_shows_live_parity_from_shadow_traffic(tmp_path):
    results = synthetic.results()
    results["shadow"] = [
        {"model": "digits-cnn-torch", "primary": "onnxruntime", "shadow": "tflite", "compared": 40,
         "failed": 1, "skipped": 2, "rows": 40, "top1_disagreements": 1, "max_abs_error": 2.5e-6,
         "last_error": "", "top1_disagreement_rate": 0.025}]
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    build_report(path)
    md = (tmp_path / "report.md").read_text()
    assert "## Live parity (shadow traffic)" in md
    assert "| digits-cnn-torch | ONNX Runtime | TFLite | 40 | 1 | 2 | 2.50% of 40 | 2.50e-06 |" in md
    results.pop("shadow")
    path.write_text(json.dumps(results))
    build_report(path)
    assert "Live parity" not in (tmp_path / "report.md").read_text()  # no shadow: no section
