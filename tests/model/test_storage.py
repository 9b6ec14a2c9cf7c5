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


async def test_http_downloads_and_reports_errors(tmp_path: Path, small_model, monkeypatch) -> None:
    monkeypatch.setenv("MOPAR_FETCH_ALLOW_NETWORKS", "127.0.0.1/32")  # the test's server is on loopback
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


@pytest.mark.parametrize(
    "uri, fragment",
    [
        ("pvc://claim/../../../../etc/passwd", "without '..'"),
        ("pvc://claim//etc/passwd", "without '..' or '//'"),
        ("pvc://claim/./m.onnx", "without '..'"),
        ("pvc://../etc/passwd", "'..' is not a Kubernetes object name"),
        ("configmap://cm/../../../../etc/hostname", "without '..'"),
        ("configmap://cm/", "must name a file"),
    ],
)
async def test_mounted_paths_stay_under_their_volume(uri: str, fragment: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MOPAR_PVC_ROOT", str(tmp_path / "pvc"))
    monkeypatch.setenv("MOPAR_CONFIGMAP_ROOT", str(tmp_path / "cm"))
    (tmp_path / "pvc" / "claim").mkdir(parents=True)
    (tmp_path / "cm" / "cm").mkdir(parents=True)
    with pytest.raises(UsageError) as refused:
        await storage.fetch(uri, tmp_path / "w")
    assert "\n" not in str(refused.value) and fragment in str(refused.value)


async def test_a_symlink_out_of_the_volume_is_refused(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "pvc" / "claim").mkdir(parents=True)
    (tmp_path / "outside.onnx").write_bytes(b"secret")
    (tmp_path / "pvc" / "claim" / "m.onnx").symlink_to(tmp_path / "outside.onnx")
    (tmp_path / "pvc" / "claim" / "dir").symlink_to(tmp_path)
    monkeypatch.setenv("MOPAR_PVC_ROOT", str(tmp_path / "pvc"))
    for uri in ("pvc://claim/m.onnx", "pvc://claim/dir/outside.onnx"):
        with pytest.raises(UsageError, match="leads outside its volume"):
            await storage.fetch(uri, tmp_path / "w")


async def _server(handler) -> tuple[web.AppRunner, int]:  # type: ignore[no-untyped-def]
    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]


async def test_http_to_loopback_is_refused_unless_allowed(tmp_path: Path, monkeypatch) -> None:
    """Loopback here stands for every non-public range: the check is the same (ipaddress' flags),
    and a loopback server shows the refusal happens before anything is fetched."""
    fetched: list[str] = []

    async def serve(request: web.Request) -> web.Response:
        fetched.append(request.path)
        return web.Response(body=b"model")

    runner, port = await _server(serve)
    monkeypatch.delenv("MOPAR_FETCH_ALLOW_NETWORKS", raising=False)
    try:
        for uri, reason in [
            (f"http://127.0.0.1:{port}/m.onnx", "127.0.0.1 is a loopback address"),
            (f"http://localhost:{port}/m.onnx", "localhost resolves to a loopback address"),
            (f"http://[::ffff:127.0.0.1]:{port}/m.onnx", "is a loopback address"),
            (f"http://[::1]:{port}/m.onnx", "::1 is a loopback address"),
        ]:
            with pytest.raises(UsageError, match="refused") as refused:
                await storage.fetch(uri, tmp_path)
            assert reason in str(refused.value)
        assert fetched == []
        monkeypatch.setenv("MOPAR_FETCH_ALLOW_NETWORKS", "127.0.0.0/8")
        assert (await storage.fetch(f"http://127.0.0.1:{port}/m.onnx", tmp_path)).read_bytes() == b"model"
    finally:
        await runner.cleanup()


@pytest.mark.parametrize(
    "host, kind",
    [
        ("169.254.169.254", "link-local"),  # the cloud metadata service
        ("10.0.0.1", "private"),
        ("[fe80::1]", "link-local"),
        ("0.0.0.0", "unspecified"),
        ("100.64.0.1", "not a public address"),  # carrier-grade NAT, shared address space
    ],
)
async def test_http_to_private_ranges_is_refused_before_connecting(host: str, kind: str, tmp_path, monkeypatch) -> None:
    # Refused before any packet is sent: nothing listens there for this test, and nothing may be tried.
    monkeypatch.delenv("MOPAR_FETCH_ALLOW_NETWORKS", raising=False)
    with pytest.raises(UsageError, match=f"is an? {kind}|is {kind}"):
        await storage.fetch(f"http://{host}/latest/meta-data/", tmp_path)


async def test_redirects_are_checked_and_errors_do_not_echo_the_server(tmp_path: Path, monkeypatch) -> None:
    async def serve(request: web.Request) -> web.Response:
        if request.path == "/away":  # to another loopback address, not the allowed one
            raise web.HTTPFound(f"http://127.0.0.2:{request.url.port}/m.onnx")
        if request.path == "/loop":
            raise web.HTTPFound("/loop")
        return web.Response(status=500, reason="SECRET-BANNER", text="SECRET-BODY internal details")

    runner, port = await _server(serve)
    monkeypatch.setenv("MOPAR_FETCH_ALLOW_NETWORKS", "127.0.0.1/32")
    try:
        with pytest.raises(UsageError, match="refused, 127.0.0.2 is a loopback address"):
            await storage.fetch(f"http://127.0.0.1:{port}/away", tmp_path)
        with pytest.raises(UsageError, match="more than 5 redirects"):
            await storage.fetch(f"http://127.0.0.1:{port}/loop", tmp_path)
        with pytest.raises(UsageError) as failed:
            await storage.fetch(f"http://127.0.0.1:{port}/m.onnx", tmp_path)
        assert str(failed.value).endswith(": HTTP 500") and "SECRET" not in str(failed.value)
    finally:
        await runner.cleanup()
    with pytest.raises(UsageError) as failed:  # nothing listens any more
        await storage.fetch(f"http://127.0.0.1:{port}/m.onnx", tmp_path)
    assert str(failed.value).endswith("cannot download (cannot connect)")
