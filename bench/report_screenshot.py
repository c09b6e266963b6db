"""Render reports from sample measurements and photograph them with headless Chromium.

    .venv/bin/python bench/report_screenshot.py [OUT_DIR]

Writes four reports (one classification run, a comparison of two runs with 8 runtimes, one
detection run, 8 runtimes that all predict differently — the slowest case), prints how long each took to render, and saves full-page screenshots plus
1400x1800 tiles (`*_tile<N>.png`) small enough to look at one by one. Needs `chromium`
(apt-get install chromium); without it only the reports are written.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from heiti.nodes.reports.render import render, report_from_runs  # noqa: E402

from tests.report_samples import CLASSIFICATION_SPECS, Spec, write_sample_run  # noqa: E402

WIDTH, HEIGHT, TILE = 1400, 9000, 1800

DETECTION_SPECS = [
    Spec("torch_rt", "torch", "PyTorch (eager, fp32)", "torch", 9.5, 0.86, 1_900_000),
    Spec("ort", "onnxruntime", "ONNX Runtime (CPU)", "onnx", 3.1, 0.86, 1_850_000, 3.4),
    Spec("tvm", "tvm", "TVM (llvm, O3, untuned)", "tvm", 41.0, 0.86, 2_300_000, 22.0),
]

SECOND_RUN = [
    Spec("torch_rt", "torch", "PyTorch (eager, fp32)", "torch", 1.75, 0.9778, 420_000),
    Spec("ort", "onnxruntime", "ONNX Runtime (CPU, fp32)", "onnx", 0.40, 0.9778, 405_000, 3.0),
    Spec("openvino", "openvino", "OpenVINO (CPU, f32)", "openvino", 0.36, 0.9778, 640_000, 2.2),
    Spec("tvm_tuned", "tvm", "TVM (llvm, O3, 64 trials)", "tvm", 0.22, 0.9778, 600_000, 310.0),
]


def screenshot(html: Path, png: Path) -> bool:
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        print("  chromium not found: no screenshot")
        return False
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                        "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
                        "--hide-scrollbars", f"--screenshot={png}", f"--window-size={WIDTH},{HEIGHT}",
                        html.resolve().as_uri()], check=False, capture_output=True, timeout=120)
    return png.is_file()


def tiles(png: Path) -> int:
    """Cut the tall screenshot into tiles, dropping the blank bottom."""
    from PIL import Image, ImageChops

    image = Image.open(png).convert("RGB")
    background = Image.new("RGB", image.size, (255, 255, 255))
    box = ImageChops.difference(image, background).getbbox()
    bottom = min(image.height, (box[3] if box else image.height) + 20)
    count = 0
    for top in range(0, bottom, TILE):
        image.crop((0, top, WIDTH, min(bottom, top + TILE))).save(png.with_name(f"{png.stem}_tile{count}.png"))
        count += 1
    return count


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="heiti-report-"))
    out.mkdir(parents=True, exist_ok=True)
    run_a, run_b, run_d = out / "digits-monday", out / "digits-tuesday", out / "shapes-detection"
    for run in (run_a, run_b, run_d):
        shutil.rmtree(run, ignore_errors=True)
    write_sample_run(run_a, CLASSIFICATION_SPECS, seed=1)
    write_sample_run(run_b, SECOND_RUN, seed=2)
    write_sample_run(run_d, DETECTION_SPECS, task="detection", seed=3)
    run_e = out / "eight-distinct"
    shutil.rmtree(run_e, ignore_errors=True)
    # worst case for speed: every runtime predicts differently, so no confusion matrix is shared
    write_sample_run(run_e, [Spec(f"rt{i}", "onnxruntime", f"runtime {i}", "onnx", 0.2 + 0.15 * i, 0.90 + 0.01 * i,
                                  100_000 * (i + 1), 1.0 + i) for i in range(8)], seed=4)
    jobs = [("single", [run_a], ""), ("comparison", [run_a, run_b], ""), ("detection", [run_d], ""),
            ("eight", [run_e], "")]
    for name, runs, baseline in jobs:
        started = time.perf_counter()
        report = report_from_runs(runs, baseline=baseline)
        rendered = render(report, out / f"{name}.html")
        elapsed = time.perf_counter() - started
        figures = sum(1 for _ in rendered.files.glob("*.png"))
        print(f"{name}: {len(report.entries)} runtimes, {figures} figures, {elapsed:.2f}s to render, "
              f"{rendered.html.stat().st_size / 1024:.0f} KB -> {rendered.html}")
        png = out / f"{name}.png"
        if screenshot(rendered.html, png):
            print(f"  screenshot {png} ({tiles(png)} tiles)")


if __name__ == "__main__":
    main()
