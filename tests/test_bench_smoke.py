"""The GPU benchmark's ResNet-50 (ImageNet) and curvature parts at smoke sizes on CPU, in-process: what the JSON
records, and that its projections follow from the per-point times it measured; bench.thesis reads that part."""
import json
import math

import pytest

from bench import gpu, thesis


@pytest.fixture(scope="module")
def record(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench-gpu")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OUT", str(out))
        assert gpu.main(["--smoke", "--only", "resnet50_224,curvature"]) == 0
    (path,) = out.glob("gpu-smoke-*.json")
    return json.loads(path.read_text())


def test_resnet50_rows_and_imagenet_projection(record):
    (case,) = record["cases"]
    assert case["workload"] == "resnet50_224" and case["samples"] == 4
    rows = {c["config"]: c for c in case["configs"]}
    assert {"bf16 eager", "fp32 eager"} <= set(rows), rows
    assert math.isfinite(case["fp32_vs_bf16_max_rel_diff"])
    decode = case["decode"]["images_per_s"]
    assert decode > 0 and case["copy_s_per_sample"] >= 0
    for c in rows.values():
        assert "error" not in c, c.get("traceback")
        assert c["points_per_s"] > 0 and c["tflops"] > 0 and math.isfinite(c["samples_per_s"])
        pr = c["imagenet_60x60"]
        point = c["per_point_s"] * 50_000 / 4
        assert pr["per_point_s"] == pytest.approx(point)
        assert pr["decode_s"] == pytest.approx(50_000 / decode)
        fixed = pr["decode_s"] + pr["worker_setup_s"]
        assert pr["one_gpu_h"] == pytest.approx((fixed + 3600 * point) / 3600)
        assert pr["gpus"] == 20 and pr["gpus_h"] == pytest.approx((fixed + 180 * point) / 3600)
        assert pr["worker_setup_s"] >= c["setup_s"] + c["warmup_s"]
        assert tuple(pr["thesis"]) == thesis.THESIS["imagenet_resnet50"]


def test_curvature_row_and_map_projection(record):
    c = record["curvature"]
    assert "error" not in c, c.get("traceback")
    assert 1 <= c["hvps"] <= 2 and c["point_s"] > 0 and c["loss_s"] > 0  # --smoke caps Lanczos at 2 products
    assert c["ratio"] == pytest.approx(c["point_s"] / c["loss_s"])
    whole, timed = c["projected"]
    assert (whole["hessian_samples"], timed["hessian_samples"], whole["points"]) == (50_000, c["samples"], 51 * 51)
    assert whole["per_point_s"] == pytest.approx((c["point_s"] + c["loss_s"]) * 50_000 / c["samples"])
    assert timed["per_point_s"] == pytest.approx(c["point_s"] + c["loss_s"] * 50_000 / c["samples"])
    assert whole["array_h"] == pytest.approx((c["setup_s"] + 82 * whole["per_point_s"]) / 3600)  # 2601 / 32 -> 82
    assert whole["one_h"] > whole["array_h"] > timed["array_h"]


def test_thesis_takes_the_resnet50_rate_for_224_images(tmp_path):
    recorded = json.loads(thesis.RECORDED.read_text())
    before = thesis.rates(thesis.RECORDED)
    assert before["conv224"] == before["conv"]  # no resnet50_224 part: ResNet-56's rate
    recorded["cases"].append({"workload": "resnet50_224", "configs": [
        {"config": "bf16 eager", "tflops": 300.0}, {"config": "bf16 compiled", "tflops": 350.0},
        {"config": "fp32 eager", "tflops": 40.0}, {"config": "bf16 unfolded", "error": "OutOfMemoryError"}]})
    path = tmp_path / "gpu-with-resnet50.json"
    path.write_text(json.dumps(recorded))
    after = thesis.rates(path)
    assert after["conv224"] == {"fp32": 40.0, "bf16": 350.0} and after["conv"] == before["conv"]
    old, new = thesis.project("imagenet_resnet50", before), thesis.project("imagenet_resnet50", after)
    assert new[:2] == old[:2]
    assert new[2] * 40.0 == pytest.approx(old[2] * before["conv"]["fp32"])
    assert new[3] * 350.0 == pytest.approx(old[3] * before["conv"]["bf16"])
