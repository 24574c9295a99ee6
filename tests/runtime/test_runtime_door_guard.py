"""The door's guard rails on a real server (127.0.0.1): token rules and token files (systemd's credential copy
accepted), a refused token disabling manual unlock with one loud line on the page, allowed Host names, nosniff
and the docs' CSP, uploads refused by their header's shape and decoded within a pixel budget."""

from __future__ import annotations

import io
import logging
import os
import struct
import threading
import time

import httpx
import numpy as np
import pytest
from PIL import Image
from runtime_support import LiveServer, jpeg

from toolkit.cli import main
from toolkit.errors import ImageError
from toolkit.inference.predictor import Predictor
from toolkit.runtime.core.config import ModelConfig, ServeConfig
from toolkit.runtime.core.holder import ModelHolder
from toolkit.runtime.guard import HostCheck, RefusalLog, real_client
from toolkit.runtime.security import new_token, token_file_problem, token_problem, unlock_refusal
from toolkit.runtime.server import create_app
from toolkit.runtime.uploads import DecodeBudget, decode_upload, frame_shape_problem

TOKEN = new_token()


def test_token_rules_and_the_token_command(capsys):
    assert token_problem("1") and token_problem("aaaabbbbccccdddd")  # short; 4 distinct characters
    assert token_problem("abcdefghijklmnop") is None
    assert main(["door", "token"]) == 0
    printed = capsys.readouterr().out.strip()
    assert token_problem(printed) is None and len(printed) >= 40 and printed != new_token()


def _acl_user_read(path, uid: int) -> bool:
    """What systemd's LoadCredential does: a POSIX ACL entry user:UID:r on a 0400 file (False if unsupported)."""
    header = struct.pack("<I", 2)
    entries = [(0x01, 4, 0xFFFFFFFF), (0x02, 4, uid), (0x04, 0, 0xFFFFFFFF), (0x10, 4, 0xFFFFFFFF),
               (0x20, 0, 0xFFFFFFFF)]  # user_obj r, user uid r, group_obj -, mask r, other -  # fmt: skip
    try:
        os.setxattr(path, "system.posix_acl_access", header + b"".join(struct.pack("<HHI", *e) for e in entries))
        return True
    except OSError:
        return False


def test_token_files_others_can_read_are_refused_but_systemds_credential_is_accepted(tmp_path):
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    for mode, refused in [(0o600, False), (0o400, False), (0o640, True), (0o644, True), (0o666, True)]:
        token.chmod(mode)
        assert (token_file_problem(token, {}) is not None) is refused, oct(mode)
    link = tmp_path / "link"
    link.symlink_to(token)
    assert "regular file" in token_file_problem(link, {})

    # $CREDENTIALS_DIRECTORY/token as systemd writes it: 0400, then an ACL granting the service user read,
    # which stat shows as group r (mode 0440). Elsewhere that mode is refused; there it is how systemd does it.
    creds = tmp_path / "credentials"
    creds.mkdir(mode=0o500)
    copy = creds / "token"
    copy.write_text(TOKEN)
    copy.chmod(0o400)
    if not _acl_user_read(copy, 65534):
        copy.chmod(0o440)  # no ACL support here: the same mode bits as the ACL's mask gives
    assert (copy.stat().st_mode & 0o777) == 0o440
    assert token_file_problem(copy, {"CREDENTIALS_DIRECTORY": str(creds)}) is None
    assert token_file_problem(copy, {}) is not None
    copy.chmod(0o444)  # "other" can read: not systemd's doing
    assert token_file_problem(copy, {"CREDENTIALS_DIRECTORY": str(creds)}) is not None


def test_a_refused_token_disables_manual_unlock_loudly_and_the_door_still_serves(tmp_path, export_dir):
    weak = tmp_path / "token"
    weak.write_text("1")  # the mode 666 file holding "1"
    weak.chmod(0o666)
    config = ServeConfig(token_file=weak)
    notice = unlock_refusal(config, "1", {})
    assert notice.startswith("MANUAL UNLOCK DISABLED") and str(weak) in notice and "toolkit door token" in notice
    assert "'1'" not in notice
    app = create_app(ModelHolder(ModelConfig(export_dir)), config, token=None, notice=notice)
    with LiveServer(app) as live, httpx.Client(base_url=live.url, timeout=5) as c:
        r = c.post("/door/open", headers={"Authorization": "Bearer 1"})
        assert r.status_code == 403 and r.json()["error"] == notice
        assert c.get("/door/state").json()["notice"] == notice  # the page shows it
        assert c.post("/predict", content=jpeg(220)).status_code == 200  # still serving


def test_host_names_nosniff_and_the_docs_csp(export_dir):
    app = create_app(ModelHolder(ModelConfig(export_dir)), ServeConfig(allowed_hosts=("door.example.org",)))
    with LiveServer(app) as live, httpx.Client(base_url=live.url, timeout=5) as c:
        for host, ok in [
            ("door.example.org", True),
            ("DOOR.example.org.:443", True),
            ("127.0.0.1:8000", True),
            ("[::1]:8000", True),
            ("evil.example.com", False),
            ("door.example.org.evil.com", False),
        ]:
            r = c.get("/door/state", headers={"Host": host})
            assert (r.status_code == 200) is ok, (host, r.status_code)
            assert r.headers["x-content-type-options"] == "nosniff"
            if not ok:
                assert r.status_code == 400 and "--allowed-hosts" in r.json()["error"]
        for path in ("/", "/docs", "/openapi.json", "/nope", "/static/page/page.js"):
            assert c.get(path).headers["x-content-type-options"] == "nosniff", path
        docs = c.get("/docs")
        csp = docs.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in csp and "script-src 'self' 'sha256-" in csp
        assert docs.headers["x-frame-options"] == "DENY"
    default = HostCheck(["127.0.0.1", "localhost"])
    assert default("localhost:8000") and not default("rebind.attacker.net")
    assert HostCheck(["*"])("anything.example")


def test_real_client_is_the_right_most_forwarded_entry_of_a_trusted_proxy():
    from toolkit.runtime.guard import parse_networks

    proxy = parse_networks(["127.0.0.1"])
    xff = [(b"x-forwarded-for", b"1.2.3.4, 10.0.0.7")]
    assert real_client("127.0.0.1", xff, proxy) == "10.0.0.7"  # what the proxy saw; 1.2.3.4 was the client's claim
    assert real_client("192.168.1.9", xff, proxy) == "192.168.1.9"  # not the proxy: headers are ignored
    assert real_client("127.0.0.1", xff, ()) == "127.0.0.1"  # no proxy configured
    assert real_client("127.0.0.1", [(b"x-forwarded-for", b"junk")], proxy) == "127.0.0.1"
    with pytest.raises(Exception, match="trusted_proxy"):
        ServeConfig(trusted_proxy=("not-an-address",))


def test_refusals_are_summarised_once_a_minute(caplog):
    caplog.set_level(logging.WARNING, "toolkit.runtime")
    refusals = RefusalLog("http", every=60)
    for i in range(2000):
        refusals.note("wrong token", f"10.0.0.{i % 7}")
    refusals.close()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and "1999 refused" in lines[1] and "7 client(s)" in lines[1], lines


def _png(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("L", (width, height), 200).save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def test_uploads_refused_by_their_headers_shape_and_jpegs_drafted(export_dir):
    p = Predictor(export_dir)
    budget = DecodeBudget(25_000_000)
    assert frame_shape_problem(1920, 1080) is None and frame_shape_problem(3840, 1080) is None  # 32:9
    assert "side" in frame_shape_problem(1, 24_999_999) and "side" in frame_shape_problem(9000, 4000)
    assert "aspect" in frame_shape_problem(5000, 1000)
    with pytest.raises(ImageError, match="aspect ratio"):
        decode_upload(_png(8000, 2), p, budget)
    big = io.BytesIO()
    Image.fromarray(np.full((2400, 3200, 3), 200, np.uint8)).save(big, format="JPEG", quality=80)
    decoded = []
    real_open = Image.Image.load

    def spy(img):
        decoded.append(img.size)
        return real_open(img)

    Image.Image.load, restore = spy, real_open
    try:
        x = decode_upload(big.getvalue(), p, budget)
    finally:
        Image.Image.load = restore
    assert x.shape == (*p.size, 3) and decoded[0] == (400, 300)  # 1/8 scale, not 3200x2400
    assert budget.used == 0


def test_the_decode_budget_lets_one_large_image_through_at_a_time():
    budget = DecodeBudget(100)
    held = budget.acquire(80)
    got = []
    t = threading.Thread(target=lambda: got.append(budget.acquire(50)))
    t.start()
    time.sleep(0.1)
    assert got == []  # waits for room
    assert budget.acquire(20) == 20  # a small one fits beside the large one
    budget.release(held)
    t.join(2)
    assert got == [50]
    budget.release(20)
    budget.release(50)
    assert budget.acquire(500) == 100 and budget.used == 100  # capped at the budget: it never waits forever
