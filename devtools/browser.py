"""Headless Chromium driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``:
NUL-terminated JSON on file descriptors 3 and 4), so no WebSocket client is needed."""

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time


class Browser:
    def __init__(self) -> None:
        binary = shutil.which("chromium") or shutil.which("chromium-browser")
        if binary is None:
            raise FileNotFoundError("chromium is not installed")
        self.profile = tempfile.mkdtemp(prefix="chromium-")
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()

        def arrange_fds() -> None:
            os.dup2(to_browser_r, 3)
            os.dup2(from_browser_w, 4)

        self.proc = subprocess.Popen(
            [
                binary,
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                f"--user-data-dir={self.profile}",
                "--remote-debugging-pipe",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            # 3 and 4 are the protocol pipe once arrange_fds has run: keep them open.
            pass_fds=(to_browser_r, from_browser_w, 3, 4),
            preexec_fn=arrange_fds,
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict] = []
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)[
            "sessionId"
        ]
        # A download must never stall a test: attachments are refused, not saved.
        self.call("Browser.setDownloadBehavior", behavior="deny")
        self.call("Page.enable", session=True)

    def _read_message(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            if time.monotonic() > deadline:
                raise TimeoutError("no answer from chromium")
            chunk = os.read(self._from_browser, 65536)
            if not chunk:
                raise RuntimeError("chromium closed the pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method: str, *, session: bool = False, timeout: float = 30, **params) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = self.session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            answer = self._read_message(deadline)
            if answer.get("id") == self._next_id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer.get("result", {})
            self.events.append(answer)

    def open(self, url: str, *, settle: float = 1.0) -> dict:
        """Navigate and wait for the load (or for the navigation to end in a refused download);
        return Page.navigate's answer."""
        self.events.clear()
        result = self.call("Page.navigate", session=True, url=url)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if any(e.get("method") in ("Page.loadEventFired",) for e in self.events):
                break
            if result.get("errorText"):
                break
            self.evaluate("1")  # pumps events
            time.sleep(0.1)
        time.sleep(settle)
        return result

    def evaluate(self, expression: str):
        answer = self.call("Runtime.evaluate", session=True, expression=expression)
        return answer.get("result", {}).get("value")

    def screenshot(self, path: str, *, width: int = 412, height: int = 1400) -> None:
        import base64

        self.call(
            "Emulation.setDeviceMetricsOverride",
            session=True,
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=True,
        )
        data = self.call("Page.captureScreenshot", session=True, format="png")["data"]
        with open(path, "wb") as fh:
            fh.write(base64.b64decode(data))

    def close(self) -> None:
        with contextlib.suppress(Exception):  # it may already be gone
            self.call("Browser.close", timeout=5)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_browser)
        os.close(self._from_browser)
        shutil.rmtree(self.profile, ignore_errors=True)
