"""``edgeproto serve``: the HTTP API (bounds, errors) and the web page in a real headless Chromium."""

from __future__ import annotations

import base64
import io
import shutil
import socket
import threading
import time

import numpy as np
import pytest
from PIL import Image

from edgeproto.bundle import open_bundle
from edgeproto.device.explain import explain_image
from edgeproto.device.explainer import Explainer
from edgeproto.export.bundle_writer import export_bundle

pytest.importorskip("fastapi", reason="fastapi (the serve extra) is not installed")
pytest.importorskip("uvicorn", reason="uvicorn (the serve extra) is not installed")
pytest.importorskip("cv2", reason="opencv-python-headless (the video extra) is not installed")

from edgeproto.device.server import TokenBucket, create_app  # noqa: E402


@pytest.fixture(scope="module")
def served(trained, tmp_path_factory):
    """A bundle with export's extras, one test image (PNG bytes + path) and an open explainer."""
    from edgeproto.data import build_dataset

    root = tmp_path_factory.mktemp("serve")
    export_bundle(trained("l2_log"), root / "b", golden=4, analysis_images=16)
    ds = build_dataset(open_bundle(root / "b").manifest["data"], "test")
    path = root / "x.png"
    Image.fromarray(ds.raw_image(1)).resize((80, 80), Image.Resampling.NEAREST).save(path)
    with Explainer.open(root / "b") as ex:
        yield root / "b", path, ex


def _b64(path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def test_api_answers_like_explain_and_refuses_bad_requests(served):
    from fastapi.testclient import TestClient

    bundle, path, ex = served
    client = TestClient(create_app(ex, max_bytes=64 << 10, rate=0))
    assert client.get("/healthz").json()["classes"] == list(ex.classes)
    r = client.post("/explain", json={"image": _b64(path)})
    assert r.status_code == 200, r.text
    got, want = r.json(), explain_image(bundle, path)
    assert got["prediction"] == want["prediction"]
    assert [p["prototype"] for p in got["top_prototypes"]] == [p["prototype"] for p in want["top_prototypes"]]
    assert len(got["images"]) == 3 and all(i["heatmap"].startswith("data:image/png;base64,") for i in got["images"])
    assert got["images"][0]["source"] and got["images"][0]["gallery"]
    heat = Image.open(io.BytesIO(base64.b64decode(got["images"][0]["heatmap"].split(",", 1)[1])))
    assert heat.size == (192, 192)
    because = client.post("/explain", json={"image": "data:image/png;base64," + _b64(path), "because": True}).json()
    assert set(because["top_prototypes"][0]["because"]["local"]) == {"hue", "shape", "texture", "contrast",
                                                                    "saturation", "brightness"}
    assert client.post("/explain", json={"image": "not base64!"}).status_code == 400
    assert client.post("/explain", json={"image": base64.b64encode(b"text").decode()}).status_code == 400
    assert client.post("/explain", content=b"[1, 2]").status_code == 400
    big = client.post("/explain", content=b"x" * (65 << 10))
    assert big.status_code == 413 and "larger than" in big.json()["error"]

    limited = TestClient(create_app(ex, rate=0.5, burst=2))
    codes = [limited.post("/explain", json={"image": _b64(path)}).status_code for _ in range(4)]
    assert codes[:2] == [200, 200] and codes[2:] == [429, 429]
    assert int(limited.post("/explain", json={"image": _b64(path)}).headers["retry-after"]) >= 1


def test_token_bucket_refills():
    bucket = TokenBucket(rate=100.0, burst=1)
    assert bucket.take("a") == 0 and bucket.take("a") > 0 and bucket.take("b") == 0
    time.sleep(0.03)
    assert bucket.take("a") == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(shutil.which("chromium") is None or shutil.which("chromedriver") is None,
                    reason="Debian's chromium and chromium-driver are not installed (make test installs them)")
def test_web_page_in_headless_chromium(served, tmp_path):
    import uvicorn
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    bundle, path, ex = served
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(ex), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1200,1100"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)
    try:
        deadline = time.time() + 20
        while not server.started and time.time() < deadline:
            time.sleep(0.05)
        driver.get(f"http://127.0.0.1:{port}/")
        wait = WebDriverWait(driver, 30)
        wait.until(lambda d: "classes:" in d.find_element(By.ID, "model").text)
        driver.find_element(By.ID, "file").send_keys(str(path))
        wait.until(lambda d: d.find_element(By.ID, "prediction").text.strip() != "")
        want = explain_image(bundle, path)
        assert driver.find_element(By.ID, "prediction").text.startswith(want["prediction"]["class_name"])
        rows = driver.find_elements(By.CSS_SELECTOR, ".proto")
        assert [int(r.get_attribute("data-prototype")) for r in rows] == \
            [p["prototype"] for p in want["top_prototypes"]]
        for cls in ("heatmap", "source", "gallery"):  # every picture decoded by the browser
            imgs = driver.find_elements(By.CSS_SELECTOR, f"img.{cls}")
            assert len(imgs) == 3 and all(
                driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth", i) == 192
                for i in imgs), cls
        assert "logit" in driver.find_element(By.ID, "terms").text
        assert "runner-up" in driver.find_element(By.ID, "runnerup").text
        shot = tmp_path / "page.png"
        driver.save_screenshot(str(shot))
        px = np.asarray(Image.open(shot).convert("RGB"))
        assert px.shape[0] > 500 and len(np.unique(px.reshape(-1, 3)[::7], axis=0)) > 500  # pictures, not blank

        bad = tmp_path / "bad.png"
        bad.write_text("not an image")
        driver.find_element(By.ID, "file").send_keys(str(bad))
        wait.until(lambda d: "error" in d.find_element(By.ID, "status").text)
        assert "not a readable image" in driver.find_element(By.ID, "status").text
    finally:
        driver.quit()
        server.should_exit = True
        thread.join(timeout=10)
