"""Downloads from a real local HTTP server: verify, reject corruption, resume, mirrors, file://."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
import torchvision

import solo.zoo
from solo.zoo.__main__ import main
from solo.zoo.download import DownloadError, fetch
from solo.zoo.manifest import DEFAULT_MANIFEST, ManifestError, read_manifest
from tests.zoo.conftest import assert_same_network


class FileServer:
    """Serves ``files`` (name -> bytes) on 127.0.0.1 with Range support, and records requests.

    ``cut_after`` makes the next response announce the whole length but close after that many
    bytes, like a dropped connection; ``ignore_range`` answers every request with the whole file.
    """

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)
        self.sent = 0  # body bytes sent, all requests together
        self.cut_after: int | None = None
        self.ignore_range = False
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                name = self.path.lstrip("/")
                server.requests.append((name, self.headers.get("Range")))
                if name not in server.files:
                    self.send_error(404, "no such file")
                    return
                data, start = server.files[name], 0
                ranged = self.headers.get("Range")
                if ranged and not server.ignore_range:
                    start = int(ranged.removeprefix("bytes=").split("-")[0])
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.cut_after is not None:
                    body, server.cut_after = body[: server.cut_after], None
                    self.close_connection = True
                self.wfile.write(body)
                server.sent += len(body)

            def log_message(self, *args) -> None:  # keep the test output quiet
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    served = FileServer()
    yield served
    served.close()


@pytest.fixture(autouse=True)
def no_zoo_environment(monkeypatch):
    for variable in ("SOLO_ZOO_URL", "SOLO_ZOO_MANIFEST", "SOLO_ZOO_DIR"):
        monkeypatch.delenv(variable, raising=False)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def payload(size: int = 300_000, seed: int = 0) -> bytes:
    return torch.randint(0, 256, (size,), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(seed)).numpy().tobytes()


def write_manifest(path: Path, base_url: str | None, entries: list[dict]) -> Path:
    full = [{"method": "byol", "backbone": "resnet18", "dataset": "cifar10", "linear_acc1": None,
             "knn_acc1": None, **entry} for entry in entries]
    path.write_text(json.dumps({"format": 1, "base_url": base_url, "datasets": ["cifar10"],
                                "checkpoints": full}))
    return path


def test_good_download_is_verified_and_renamed(server, tmp_path, capsys):
    data = payload()
    server.files["a.ckpt"] = data
    manifest = write_manifest(tmp_path / "m.json", server.url, [
        {"name": "a", "url": "a.ckpt", "sha256": sha256(data), "size": len(data)}])
    assert main(["download", "a", "--dir", str(tmp_path / "zoo"), "--manifest", str(manifest),
                 "--quiet"]) == 0
    assert (tmp_path / "zoo" / "a.ckpt").read_bytes() == data
    assert capsys.readouterr().out.strip() == str(tmp_path / "zoo" / "a.ckpt")
    assert list((tmp_path / "zoo").iterdir()) == [tmp_path / "zoo" / "a.ckpt"]  # no .part left
    # a verified copy is not fetched again
    assert main(["download", "a", "--dir", str(tmp_path / "zoo"), "--manifest", str(manifest),
                 "--quiet"]) == 0
    assert server.requests == [("a.ckpt", None)]


def test_checksum_mismatch_deletes_the_download_and_fails(server, tmp_path, capsys):
    server.files["a.ckpt"] = payload(seed=1)
    manifest = write_manifest(tmp_path / "m.json", server.url, [
        {"name": "a", "url": "a.ckpt", "sha256": sha256(payload(seed=2)), "size": None}])
    assert main(["download", "a", "--dir", str(tmp_path / "zoo"), "--manifest", str(manifest),
                 "--quiet"]) == 1
    error = capsys.readouterr().err
    assert f"error: {server.url}/a.ckpt: sha256 mismatch (expected {sha256(payload(seed=2))}, " \
           f"got {sha256(payload(seed=1))}); the download was deleted" in error
    assert list((tmp_path / "zoo").iterdir()) == []


def test_existing_corrupt_file_is_replaced_only_by_a_verified_one(server, tmp_path):
    data = payload()
    server.files["a.ckpt"] = data
    (tmp_path / "a.ckpt").write_bytes(b"not the checkpoint")
    fetch(f"{server.url}/a.ckpt", tmp_path / "a.ckpt", sha256=sha256(data), progress=False)
    assert (tmp_path / "a.ckpt").read_bytes() == data


def test_broken_connection_keeps_the_part_and_the_next_run_resumes_with_range(server, tmp_path):
    data = payload(1_000_000)
    server.files["a.ckpt"] = data
    server.cut_after = 400_000
    with pytest.raises(DownloadError, match="broke off after 400000 of 1000000 bytes.*run again to resume"):
        fetch(f"{server.url}/a.ckpt", tmp_path / "a.ckpt", sha256=sha256(data), progress=False)
    assert (tmp_path / "a.ckpt.part").read_bytes() == data[:400_000]
    assert not (tmp_path / "a.ckpt").exists()
    fetch(f"{server.url}/a.ckpt", tmp_path / "a.ckpt", sha256=sha256(data), progress=False)
    assert (tmp_path / "a.ckpt").read_bytes() == data and not (tmp_path / "a.ckpt.part").exists()
    assert server.requests == [("a.ckpt", None), ("a.ckpt", "bytes=400000-")]
    assert server.sent == 1_000_000  # the second request sent only the rest


def test_server_that_ignores_range_restarts_the_file(server, tmp_path):
    data = payload()
    server.files["a.ckpt"] = data
    server.ignore_range = True
    (tmp_path / "a.ckpt.part").write_bytes(b"x" * 1000)  # not even a prefix of the file
    fetch(f"{server.url}/a.ckpt", tmp_path / "a.ckpt", sha256=sha256(data), progress=False)
    assert (tmp_path / "a.ckpt").read_bytes() == data


def test_complete_part_file_gets_416_and_is_verified(server, tmp_path):
    data = payload()
    server.files["a.ckpt"] = data
    (tmp_path / "a.ckpt.part").write_bytes(data)  # killed between the last byte and the rename
    fetch(f"{server.url}/a.ckpt", tmp_path / "a.ckpt", sha256=sha256(data), progress=False)
    assert (tmp_path / "a.ckpt").read_bytes() == data and server.sent == 0


def test_mirror_override_by_flag_and_by_environment(server, tmp_path, monkeypatch):
    data = payload()
    server.files["a.ckpt"] = data
    dead = "http://127.0.0.1:9/nowhere"  # the manifest's own host does not answer
    manifest = write_manifest(tmp_path / "m.json", dead, [
        {"name": "a", "url": "a.ckpt", "sha256": sha256(data), "size": len(data)},
        {"name": "b", "url": f"{dead}/sub/b.ckpt", "sha256": sha256(data), "size": len(data)}])
    assert main(["download", "a", "--dir", str(tmp_path / "flag"), "--manifest", str(manifest),
                 "--quiet", "--base-url", server.url + "/"]) == 0
    server.files["b.ckpt"] = data
    monkeypatch.setenv("SOLO_ZOO_URL", server.url)
    path = solo.zoo.download("b", tmp_path / "env", manifest=manifest, progress=False)
    assert path.read_bytes() == data  # an absolute url is redirected too, keeping its file name
    assert server.requests == [("a.ckpt", None), ("b.ckpt", None)]


def test_unreachable_host_and_missing_file_fail_clearly(server, tmp_path):
    with pytest.raises(DownloadError, match=r"127.0.0.1:9/a.ckpt"):
        fetch("http://127.0.0.1:9/a.ckpt", tmp_path / "a", progress=False)
    with pytest.raises(DownloadError, match=r"/missing.ckpt: HTTP 404"):
        fetch(f"{server.url}/missing.ckpt", tmp_path / "m", progress=False)
    with pytest.raises(DownloadError, match="only http, https and file URLs"):
        fetch("ftp://example.org/a", tmp_path / "f", progress=False)


def test_file_url_and_dataset_download(tmp_path):
    source = tmp_path / "published"
    source.mkdir()
    files = {"a.ckpt": payload(seed=3), "b.ckpt": payload(seed=4)}
    for name, data in files.items():
        (source / name).write_bytes(data)
    manifest = write_manifest(tmp_path / "m.json", source.as_uri(), [
        {"name": "a", "url": "a.ckpt", "sha256": sha256(files["a.ckpt"])},
        {"name": "b", "url": (source / "b.ckpt").as_uri(), "sha256": sha256(files["b.ckpt"])},
        {"name": "c", "url": "c.ckpt", "dataset": "cifar100"}])
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "a.ckpt.part").write_bytes(files["a.ckpt"][:1234])  # resumed from a file
    assert main(["download", "--dataset", "cifar10", "--dir", str(tmp_path / "out"),
                 "--manifest", str(manifest), "--quiet"]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.ckpt", "b.ckpt"]
    for name, data in files.items():
        assert (tmp_path / "out" / name).read_bytes() == data


def test_load_downloads_verifies_and_returns_the_backbone(server, solo_run, images, tmp_path):
    backbone = solo_run[1].backbone
    checkpoint = tmp_path / "byol-resnet18-cifar10.ckpt"
    torch.save({"state_dict": {f"backbone.{k}": v for k, v in backbone.state_dict().items()}},
               checkpoint)
    server.files[checkpoint.name] = checkpoint.read_bytes()
    (tmp_path / "m.json").write_text(json.dumps({"format": 1, "base_url": server.url, "checkpoints": [
        {"name": "byol-cifar10", "method": "byol", "backbone": "resnet18", "dataset": "cifar10",
         "url": checkpoint.name, "sha256": hashlib.sha256(checkpoint.read_bytes()).hexdigest()}]}))
    loaded = solo.zoo.load("byol-cifar10", tmp_path / "zoo", manifest=tmp_path / "m.json",
                           progress=False)
    assert not loaded.training
    with torch.no_grad():
        assert torch.equal(loaded(images), backbone.eval()(images))
    assert (tmp_path / "zoo" / checkpoint.name).is_file()


def test_shipped_manifest_is_valid_and_says_what_is_published(capsys):
    shipped = read_manifest(DEFAULT_MANIFEST)
    assert shipped.datasets == ["cifar10", "cifar100", "imagenet100", "imagenet"]
    for entry in shipped.entries:  # each published entry must be verifiable
        assert (entry.sha256 or entry.md5) and entry.dataset in shipped.datasets
    if not any(e.dataset == "cifar10" for e in shipped.entries):
        assert main(["download", "--dataset", "cifar10", "--quiet"]) == 1
        assert "no published checkpoints for cifar10 yet" in capsys.readouterr().err


def test_shipped_moco_entries_are_the_readme_files_and_md5_prefixes():
    # facebookresearch/moco's README, "Models": file, md5 (first 8 hex digits), linear top-1
    published = {
        "mocov1-resnet50-imagenet-200ep": ("moco_v1_200ep", "b251726a", 60.6),
        "mocov2-resnet50-imagenet-200ep": ("moco_v2_200ep", "59fd9945", 67.7),
        "mocov2-resnet50-imagenet-800ep": ("moco_v2_800ep", "a04e12f8", 71.1),
    }
    shipped = read_manifest(DEFAULT_MANIFEST)
    for name, (stem, md5, acc1) in published.items():
        entry = shipped.get(name)
        assert entry.url == ("https://dl.fbaipublicfiles.com/moco/moco_checkpoints/"
                             f"{stem}/{stem}_pretrain.pth.tar")
        assert (entry.md5, entry.sha256, entry.linear_acc1) == (md5, None, acc1)
        assert (entry.backbone, entry.dataset, entry.filename) == ("resnet50", "imagenet",
                                                                   f"{stem}_pretrain.pth.tar")


def test_md5_prefix_verifies_the_download(server, tmp_path):
    data = payload()
    server.files["moco.pth.tar"] = data
    prefix = hashlib.md5(data).hexdigest()[:8]
    manifest = write_manifest(tmp_path / "m.json", server.url, [
        {"name": "moco", "url": "moco.pth.tar", "md5": prefix}])
    path = solo.zoo.download("moco", tmp_path / "zoo", manifest=manifest, progress=False)
    assert path.read_bytes() == data and sorted(os.listdir(tmp_path / "zoo")) == ["moco.pth.tar"]
    # a verified copy is kept; a corrupted one is fetched again and replaced
    solo.zoo.download("moco", tmp_path / "zoo", manifest=manifest, progress=False)
    assert len(server.requests) == 1
    path.write_bytes(b"x" + data[1:])
    solo.zoo.download("moco", tmp_path / "zoo", manifest=manifest, progress=False)
    assert path.read_bytes() == data and len(server.requests) == 2


def test_a_moco_checkpoint_downloads_verified_by_md5_and_loads(server, tmp_path, images):
    # the official layout (module.encoder_q / encoder_k, the queue), small: a ResNet-18 encoder
    torch.manual_seed(0)
    encoder = torchvision.models.resnet18(num_classes=128)
    state = {f"module.encoder_{which}.{k}": v for which in "qk"
             for k, v in encoder.state_dict().items()}
    state["module.queue"] = torch.randn(128, 64)
    state["module.queue_ptr"] = torch.zeros(1, dtype=torch.long)
    checkpoint = tmp_path / "moco_v1_200ep_pretrain.pth.tar"
    torch.save({"epoch": 200, "arch": "resnet18", "state_dict": state, "optimizer": {}},
               checkpoint)
    data = checkpoint.read_bytes()
    server.files["moco/" + checkpoint.name] = data
    manifest = write_manifest(tmp_path / "m.json", None, [
        {"name": "mocov1", "method": "mocov1", "dataset": "imagenet",
         "url": f"{server.url}/moco/{checkpoint.name}", "md5": hashlib.md5(data).hexdigest()[:8]}])
    loaded = solo.zoo.load_entry("mocov1", tmp_path / "zoo", manifest=manifest, progress=False)
    assert (loaded.source_format, loaded.method, loaded.backbone_name) == ("moco", "mocov1",
                                                                           "resnet18")
    encoder.fc = torch.nn.Identity()
    assert_same_network(loaded.backbone, encoder, images)


def test_md5_prefix_mismatch_fails_and_leaves_nothing(server, tmp_path, capsys):
    data = payload(seed=5)
    server.files["moco.pth.tar"] = data
    digest = hashlib.md5(data).hexdigest()
    wrong = format((int(digest[:8], 16) + 1) % 16**8, "08x")  # differs in the published prefix
    manifest = write_manifest(tmp_path / "m.json", server.url, [
        {"name": "moco", "url": "moco.pth.tar", "md5": wrong}])
    assert main(["download", "moco", "--dir", str(tmp_path / "zoo"), "--manifest", str(manifest),
                 "--quiet"]) == 1
    assert (f"md5 mismatch (expected a digest starting with {wrong}, got {digest}); the download "
            "was deleted") in capsys.readouterr().err
    assert os.listdir(tmp_path / "zoo") == []
    # with both checksums, both must match
    with pytest.raises(DownloadError, match="md5 mismatch"):
        fetch(f"{server.url}/moco.pth.tar", tmp_path / "both", sha256=sha256(data), md5=wrong,
              progress=False)
    assert not (tmp_path / "both").exists() and not (tmp_path / "both.part").exists()
    for bad in ("B251726A", "b2517", "xyz12345"):
        broken = write_manifest(tmp_path / "bad.json", None,
                                [{"name": "a", "url": "a", "md5": bad}])
        with pytest.raises(ManifestError, match="'md5' must be 8 to 32 lowercase hex digits"):
            read_manifest(broken)


def test_manifest_errors_name_the_problem(tmp_path):
    bad_sha = write_manifest(tmp_path / "a.json", None, [{"name": "a", "url": "a", "sha256": "ABC"}])
    with pytest.raises(ManifestError, match=r"checkpoints\[0\]: 'sha256' must be 64 lowercase hex"):
        read_manifest(bad_sha)
    typo = write_manifest(tmp_path / "b.json", None, [{"name": "a", "url": "a", "sha": "0"}])
    with pytest.raises(ManifestError, match="unknown key 'sha' \\(did you mean \"sha256\"\\?\\)"):
        read_manifest(typo)
    twice = write_manifest(tmp_path / "c.json", None, [{"name": "a", "url": "x/a.ckpt"},
                                                         {"name": "b", "url": "y/a.ckpt"}])
    with pytest.raises(ManifestError, match="share the filename 'a.ckpt'"):
        read_manifest(twice)
    relative = read_manifest(write_manifest(tmp_path / "d.json", None, [{"name": "a", "url": "a"}]))
    with pytest.raises(ManifestError, match="relative url 'a' and no base URL.*--base-url"):
        solo.zoo.download("a", tmp_path, manifest=relative.path)
    with pytest.raises(ManifestError, match="no checkpoint 'b'.*listed: a"):
        relative.get("b")


def test_hash_command_prints_the_manifest_fields(tmp_path, capsys):
    (tmp_path / "w.ckpt").write_bytes(b"abc")
    assert main(["hash", str(tmp_path / "w.ckpt")]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "url": "w.ckpt", "size": 3,
        "sha256": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"}


def test_wrapper_script_downloads_its_dataset_into_trained_models(tmp_path):
    dataset = "cifar100"
    data = payload(1000)
    (tmp_path / "w.ckpt").write_bytes(data)
    manifest = write_manifest(tmp_path / "m.json", tmp_path.as_uri(), [
        {"name": "w", "url": "w.ckpt", "sha256": sha256(data), "dataset": dataset}])
    script = Path(__file__).resolve().parents[2] / "zoo" / f"{dataset}.sh"
    env = {**os.environ, "PYTHON": sys.executable, "SOLO_ZOO_MANIFEST": str(manifest)}
    done = subprocess.run([str(script), "--quiet"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "trained_models" / "zoo" / dataset / "w.ckpt").read_bytes() == data
