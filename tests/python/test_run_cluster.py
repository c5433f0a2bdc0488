"""scripts/run-cluster.sh as a user runs it: 3 instances of the demo config
behind HAProxy on the fixed ports (balancer 50053/8053, instance k on
5006k/806k). Skipped when any of those ports is taken (another demo or
cluster running on this box): the script has no other ports by design."""

import os
import signal
import socket
import subprocess
import time
import unittest

import lstest

PORTS = [50053, 8053] + [p for k in (1, 2, 3) for p in (50060 + k, 8060 + k)]


def _busy(port):
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


class RunClusterTest(unittest.TestCase):
    def test_three_instances_then_sigint(self):
        if any(_busy(p) for p in PORTS):
            raise unittest.SkipTest("a run-cluster port is in use")
        import shutil
        if not shutil.which("haproxy") and not os.access("/usr/sbin/haproxy", os.X_OK):
            raise unittest.SkipTest("haproxy not installed")
        env = dict(os.environ, LS_BUILD_DIR=lstest.BUILD_DIR, LIPSYNCD=lstest.LIPSYNCD)
        log = open(os.path.join(lstest._tmp_root, "run-cluster.log"), "w+b")
        p = subprocess.Popen([os.path.join(lstest.SOURCE_DIR, "scripts", "run-cluster.sh"), "3"], env=env,
                             stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + 20
            out = None
            while time.monotonic() < deadline:
                r = subprocess.run([lstest.LIPSYNC_CLI, "--server", "127.0.0.1:50053", "infer", "demo",
                                    "--batch", "2", "--out", os.path.join(lstest._tmp_root, "rc-frames")],
                                   capture_output=True, text=True, timeout=30)
                if r.returncode == 0:
                    out = r
                    break
                time.sleep(0.3)
            self.assertIsNotNone(out, "no successful request through 127.0.0.1:50053")
            # Each instance answers directly on its own port; demo is preloaded everywhere
            # (preload: true), so the three are alike.
            for k in (1, 2, 3):
                r = subprocess.run([lstest.LIPSYNC_CLI, "--server", "127.0.0.1:5006%d" % k, "health"],
                                   capture_output=True, text=True, timeout=10)
                self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            # An instance that dies is logged; the rest keep serving.
            pid = int(subprocess.run(["pgrep", "-f", "--", "--listen 127.0.0.1:50062"], capture_output=True,
                                     text=True).stdout.split()[0])
            os.kill(pid, signal.SIGKILL)
            time.sleep(1.0)
            r = subprocess.run([lstest.LIPSYNC_CLI, "--server", "127.0.0.1:50053", "stats", "demo"],
                               capture_output=True, text=True, timeout=30)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            self.assertIsNone(p.poll())
        finally:
            p.send_signal(signal.SIGINT)
            rc = p.wait(timeout=30)
            log.seek(0)
            text = log.read().decode("utf-8", "replace")
            log.close()
        self.assertEqual(rc, 0, text)
        self.assertIn("instance 2", text)
        self.assertIn("exited with status", text)
        for port in PORTS:
            self.assertFalse(_busy(port), "port %d still open after SIGINT\n%s" % (port, text))


if __name__ == "__main__":
    unittest.main()
