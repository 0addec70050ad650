"""The downloader against a local HTTP server (127.0.0.1, Range support in the handler), and safe extraction."""

import hashlib
import io
import re
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from vlrepro.data.real import download as dl
from vlrepro.data.real.download import Archive, download, extract
from vlrepro.data.real.errors import DatasetError

DATA = bytes(range(256)) * 4000 + b"tail"  # ~1 MB: several chunks
SHA256 = hashlib.sha256(DATA).hexdigest()
MD5 = hashlib.md5(DATA).hexdigest()
TIMEOUT = 5.0


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's naming)
        srv = self.server
        rng = self.headers.get("Range")
        srv.requests.append(rng)
        data = srv.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        start = 0
        if rng and srv.ranges:
            start = int(re.fullmatch(r"bytes=(\d+)-", rng).group(1))
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
        if srv.truncate:  # announce everything, send half, close: a dropped connection
            body = body[: len(body) // 2]
        # Count before writing: the client can finish reading (and the test assert) before write() returns.
        srv.sent += len(body)
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.files, srv.requests, srv.sent, srv.ranges, srv.truncate = {"/data.bin": DATA}, [], 0, True, False
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(TIMEOUT)


def get(server, dest, **kwargs):
    return download(f"{server.url}/data.bin", dest, timeout=TIMEOUT, progress=False, **kwargs)


def test_full_download_with_checksums(server, tmp_path):
    dest = tmp_path / "sub" / "data.bin"
    assert get(server, dest, sha256=SHA256, md5=MD5) == dest
    assert dest.read_bytes() == DATA and not dest.with_name("data.bin.part").exists()
    assert server.requests == [None] and server.sent == len(DATA)
    assert get(server, dest, sha256=SHA256) == dest  # already there and verified: no request
    assert len(server.requests) == 1


def test_resume_transfers_only_the_rest(server, tmp_path):
    dest = tmp_path / "data.bin"
    have = 300_001
    (tmp_path / "data.bin.part").write_bytes(DATA[:have])
    get(server, dest, sha256=SHA256, md5=MD5)
    assert server.requests == [f"bytes={have}-"] and server.sent == len(DATA) - have
    assert dest.read_bytes() == DATA


def test_server_without_ranges_restarts_from_zero(server, tmp_path):
    server.ranges = False
    dest = tmp_path / "data.bin"
    (tmp_path / "data.bin.part").write_bytes(b"garbage that is not the start of the file")
    get(server, dest, sha256=SHA256)
    assert server.requests[0].startswith("bytes=") and server.sent == len(DATA)
    assert dest.read_bytes() == DATA


def test_complete_part_is_verified_and_renamed(server, tmp_path):
    dest = tmp_path / "data.bin"
    (tmp_path / "data.bin.part").write_bytes(DATA)
    get(server, dest, sha256=SHA256)  # the server answers 416: nothing left to send
    assert server.sent == 0 and dest.read_bytes() == DATA


def test_no_resume_discards_the_part(server, tmp_path):
    (tmp_path / "data.bin.part").write_bytes(DATA[:10])
    get(server, tmp_path / "data.bin", sha256=SHA256, resume=False)
    assert server.requests == [None] and server.sent == len(DATA)


def test_dropped_connection_keeps_the_part_for_resuming(server, tmp_path):
    dest = tmp_path / "data.bin"
    server.truncate = True
    with pytest.raises(OSError, match=r"connection closed after \d+ of \d+ bytes"):
        get(server, dest, sha256=SHA256)
    part = tmp_path / "data.bin.part"
    assert not dest.exists() and part.stat().st_size == len(DATA) // 2
    server.truncate = False
    get(server, dest, sha256=SHA256)
    assert server.requests[-1] == f"bytes={len(DATA) // 2}-" and dest.read_bytes() == DATA


def test_checksum_mismatch_deletes_the_part_and_names_both_digests(server, tmp_path):
    dest = tmp_path / "data.bin"
    wrong = "0" * 64
    with pytest.raises(DatasetError, match=rf"data\.bin: sha256 mismatch: expected {wrong}, got {SHA256}"):
        get(server, dest, sha256=wrong)
    assert not dest.exists() and not (tmp_path / "data.bin.part").exists()
    with pytest.raises(DatasetError, match=rf"md5 mismatch: expected {'1' * 32}, got {MD5}"):
        get(server, dest, md5="1" * 32)


def test_existing_dest_with_wrong_checksum_is_reported(server, tmp_path):
    dest = tmp_path / "data.bin"
    dest.write_bytes(b"not it")
    with pytest.raises(DatasetError, match="sha256 mismatch.*delete it and download again"):
        get(server, dest, sha256=SHA256)
    assert dest.exists() and not server.requests


def test_unknown_checksum_warns_with_the_digest(server, tmp_path):
    with pytest.warns(UserWarning, match=f"checksum unknown, not verified; its sha256 is {SHA256}"):
        get(server, tmp_path / "data.bin")


def test_http_error_propagates(server, tmp_path):
    with pytest.raises(OSError, match="404"):
        download(f"{server.url}/nothing", tmp_path / "x", timeout=TIMEOUT, progress=False)


def make_tar(path: Path, members: dict[str, bytes], links: dict[str, str] | None = None) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return path


def test_extract_tar_and_zip(tmp_path):
    tgz = make_tar(tmp_path / "a.tgz", {"CUB_200_2011/images.txt": b"1 a.jpg\n", "CUB_200_2011/x/y.txt": b"y"},
                   links={"CUB_200_2011/link": "x/y.txt"})
    out = extract(tgz, tmp_path / "out")
    assert (out / "CUB_200_2011" / "images.txt").read_bytes() == b"1 a.jpg\n"
    assert (out / "CUB_200_2011" / "link").read_bytes() == b"y"
    with zipfile.ZipFile(tmp_path / "b.zip", "w") as zf:
        zf.writestr("dataset_coco.json", "{}")
    assert (extract(tmp_path / "b.zip", tmp_path / "z") / "dataset_coco.json").read_text() == "{}"


@pytest.mark.parametrize("kind", ["tar_dotdot", "tar_absolute", "tar_symlink", "zip_dotdot"])
def test_extract_refuses_path_traversal(tmp_path, kind):
    dest = tmp_path / "dest"
    if kind == "zip_dotdot":
        archive = tmp_path / "evil.zip"
        with zipfile.ZipFile(archive, "w") as zf:
            zf.writestr("fine.txt", "ok")
            zf.writestr("../evil.txt", "pwned")
    else:
        members = {"fine.txt": b"ok"}
        links = None
        if kind == "tar_dotdot":
            members["sub/../../evil.txt"] = b"pwned"
        elif kind == "tar_absolute":
            members[str(tmp_path / "evil.txt")] = b"pwned"
        else:
            links = {"sub/evil": "../../evil.txt"}
        archive = make_tar(tmp_path / "evil.tar.gz", members, links)
    with pytest.raises(DatasetError, match="outside .*path traversal"):
        extract(archive, dest)
    assert not (tmp_path / "evil.txt").exists()
    assert not (dest / "fine.txt").exists()  # refused before anything was written


def test_extract_unknown_type(tmp_path):
    (tmp_path / "a.rar").write_bytes(b"")
    with pytest.raises(DatasetError, match=r"a\.rar: unknown archive type"):
        extract(tmp_path / "a.rar", tmp_path / "out")


def test_cli_downloads_extracts_and_says_what_to_set(server, tmp_path, monkeypatch, capsys):
    tgz = make_tar(tmp_path / "fixture.tgz", {"CUB_200_2011/images.txt": b"1 a.jpg\n"})
    server.files["/fixture.tgz"] = tgz.read_bytes()
    digest = hashlib.md5(tgz.read_bytes()).hexdigest()
    registry = {"fixture": Archive(f"{server.url}/fixture.tgz", "fixture.tgz", "data.real.cub = DEST/CUB_200_2011",
                                   md5=digest)}
    monkeypatch.setattr(dl, "REGISTRY", registry)
    dest = tmp_path / "data"
    assert dl.main(["fixture", "--dest", str(dest)]) == 0
    assert (dest / "CUB_200_2011" / "images.txt").exists()
    assert f"set data.real.cub = {dest}/CUB_200_2011" in capsys.readouterr().out


def test_cli_list_and_registry():
    assert set(dl.REGISTRY) >= {"cub", "cub_segmentations", "coco_karpathy", "coco_annotations2014"}
    assert all(a.url.startswith(("http://", "https://")) for a in dl.REGISTRY.values())
    buf = io.StringIO()
    from contextlib import redirect_stdout

    with redirect_stdout(buf):
        assert dl.main(["list"]) == 0
    text = buf.getvalue()
    assert "checksum unknown" in text and "md5 97eceeb196236b17998738112f37df78" in text
    with pytest.raises(SystemExit):
        dl.main(["no_such_archive", "--dest", "x"])
