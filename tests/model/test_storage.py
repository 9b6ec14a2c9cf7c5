"""Fetching models from every storage scheme the PartitionedModel accepts (real HTTP server)."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from aiohttp import web

from mopar.errors import UsageError
from mopar.model import storage
from mopar.model.modelfile import load_model


async def test_zoo_models_are_built_with_their_options(tmp_path: Path) -> None:
    path = await storage.fetch("zoo://lstm?scale=0.25&seq=16", tmp_path)
    assert load_model(path).inputs[0].shape == (1, 16)


async def test_pvc_and_configmap_read_their_mounts(tmp_path: Path, small_model, monkeypatch) -> None:
    (tmp_path / "pvc" / "models" / "nested").mkdir(parents=True)
    (tmp_path / "pvc" / "models" / "nested" / "m.onnx").write_bytes(small_model("lstm").read_bytes())
    (tmp_path / "cm" / "tiny").mkdir(parents=True)
    (tmp_path / "cm" / "tiny" / "model").write_bytes(small_model("lstm").read_bytes())
    monkeypatch.setenv("MOPAR_PVC_ROOT", str(tmp_path / "pvc"))
    monkeypatch.setenv("MOPAR_CONFIGMAP_ROOT", str(tmp_path / "cm"))
    assert load_model(await storage.fetch("pvc://models/nested/m.onnx", tmp_path / "w")).name == "m"
    assert (await storage.fetch("configmap://tiny/model", tmp_path / "w")).read_bytes()[:4]
    with pytest.raises(UsageError, match="no file 'nested/x.onnx' on claim 'models'"):
        await storage.fetch("pvc://models/nested/x.onnx", tmp_path / "w")
    with pytest.raises(UsageError, match="no key 'other' in ConfigMap 'tiny'"):
        await storage.fetch("configmap://tiny/other", tmp_path / "w")


async def test_http_downloads_and_reports_errors(tmp_path: Path, small_model) -> None:
    data = small_model("mobilenetv2").read_bytes()

    async def serve(request: web.Request) -> web.Response:
        if request.match_info["name"] == "mobilenet.onnx":
            return web.Response(body=data)
        raise web.HTTPNotFound()

    app = web.Application()
    app.router.add_get("/models/{name}", serve)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        path = await storage.fetch(f"http://127.0.0.1:{port}/models/mobilenet.onnx", tmp_path)
        onnx.checker.check_model(str(path))
        assert path.read_bytes() == data
        with pytest.raises(UsageError, match="HTTP 404"):
            await storage.fetch(f"http://127.0.0.1:{port}/models/missing.onnx", tmp_path)
    finally:
        await runner.cleanup()
    with pytest.raises(UsageError, match="cannot download"):
        await storage.fetch(f"http://127.0.0.1:{port}/models/mobilenet.onnx", tmp_path)
