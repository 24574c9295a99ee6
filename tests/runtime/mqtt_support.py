"""A real MQTT broker (Debian's mosquitto) on a free loopback port, and a real paho subscriber that records."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
from runtime_support import free_port


def mosquitto() -> str:
    """The broker's executable, or a skip naming what to install."""
    path = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
    if path is None:
        pytest.skip("mosquitto is not installed (apt-get install mosquitto; .ci/run does it)")
    return path


class Broker:
    """mosquitto on 127.0.0.1 with a temporary config; ``users`` makes a password file with mosquitto_passwd;
    ``tls`` (CA, certificate, key files) adds a TLS listener on ``tls_port`` beside the plain one."""

    def __init__(self, folder: Path, users: dict[str, str] | None = None, tls: tuple[Path, Path, Path] | None = None,
                 ) -> None:  # fmt: skip
        self.port = free_port()
        anonymous = "false" if users else "true"
        lines = [f"listener {self.port} 127.0.0.1", "persistence false", f"allow_anonymous {anonymous}"]
        self.tls_port = free_port() if tls else None
        if tls:
            ca, cert, key = tls
            lines += [f"listener {self.tls_port} 127.0.0.1", f"cafile {ca}", f"certfile {cert}", f"keyfile {key}"]
        if os.geteuid() == 0:  # as root mosquitto would become 'mosquitto', who cannot read pytest's 0700 folders
            lines.append("user root")
        if users:
            passwd = shutil.which("mosquitto_passwd")
            if passwd is None:
                pytest.skip("mosquitto_passwd is not installed")
            pwfile = folder / "passwd"
            for i, (user, password) in enumerate(users.items()):
                subprocess.run([passwd, "-b", *(["-c"] if i == 0 else []), str(pwfile), user, password], check=True,
                               capture_output=True)  # fmt: skip
            lines.append(f"password_file {pwfile}")
        conf = folder / "mosquitto.conf"
        conf.write_text("\n".join(lines) + "\n")
        self.proc = subprocess.Popen([mosquitto(), "-c", str(conf)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        for port in filter(None, (self.port, self.tls_port)):
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    assert self.proc.poll() is None, self.proc.stdout.read().decode()
                    assert time.monotonic() < deadline, "mosquitto did not start listening"
                    time.sleep(0.05)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def make_ca(folder: Path, name: str) -> tuple[Path, Path]:
    """A throwaway CA (certificate, key) made with the openssl command, or a skip."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is not installed")
    cert, key = folder / f"{name}.pem", folder / f"{name}.key"
    subprocess.run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", f"/CN={name}"],
                   check=True, capture_output=True)  # fmt: skip
    return cert, key


def server_certificate(folder: Path, ca: tuple[Path, Path]) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 (and localhost) signed by ``ca``: (certificate, key)."""
    openssl = shutil.which("openssl")
    cert, key, csr, ext = (folder / f"server.{s}" for s in ("pem", "key", "csr", "ext"))
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
    subprocess.run([openssl, "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", str(key), "-out", str(csr), "-subj", "/CN=127.0.0.1"],
                   check=True, capture_output=True)  # fmt: skip
    subprocess.run([openssl, "x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1]),
                    "-CAcreateserial", "-out", str(cert), "-days", "2", "-extfile", str(ext)],
                   check=True, capture_output=True)  # fmt: skip
    return cert, key


class Recorder:
    """A paho client subscribed to ``topics``; keeps (topic, retained, payload) in arrival order."""

    def __init__(self, port: int, topics=("#",), user: str | None = None, password: str | None = None) -> None:
        import paho.mqtt.client as paho

        self.messages: list[tuple[str, bool, str]] = []
        self._cond = threading.Condition()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"recorder-{id(self)}")
        if user:
            self.client.username_pw_set(user, password)
        subscribed = threading.Event()
        self.client.on_connect = lambda c, *_: [c.subscribe(t, qos=1) for t in topics]
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.on_message = self._message
        self.client.connect("127.0.0.1", port, keepalive=10)
        self.client.loop_start()
        assert subscribed.wait(10), "the recorder could not subscribe"

    def _message(self, client, userdata, msg) -> None:
        with self._cond:
            self.messages.append((msg.topic, bool(msg.retain), msg.payload.decode("utf-8", "replace")))
            self._cond.notify_all()

    def wait_for(self, topic: str, payload=None, timeout: float = 10.0, after: int = 0) -> tuple[str, bool, str]:
        """The first message on ``topic`` (with ``payload``, or one for which ``payload(p)`` is true) from index
        ``after`` on; fails after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for m in self.messages[after:]:
                    if m[0] == topic and (payload is None or (payload(m[2]) if callable(payload) else m[2] == payload)):
                        return m
                left = deadline - time.monotonic()
                assert left > 0, f"no {payload!r} on {topic} in {timeout} s; got {self.messages[after:][-8:]}"
                self._cond.wait(left)

    def publish(self, topic: str, payload: str) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
