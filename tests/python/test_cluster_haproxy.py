"""Scale-out behind HAProxy (deploy/haproxy.cfg, docs/SCALING.md): avatar
affinity, failover on SIGTERM and SIGKILL, bounded-load spill of a hot
avatar, gRPC-Web and a server-streaming call through the balancer.

The same affinity and failover checks run against nginx in
test_cluster_nginx.py (cluster_checks.py holds them).
"""

import unittest

import cluster_checks


class HaproxyAffinityTest(cluster_checks.AffinityChecks, unittest.TestCase):
    KIND = "haproxy"


class HaproxyFailoverTest(cluster_checks.FailoverChecks, unittest.TestCase):
    KIND = "haproxy"


class HaproxyBoundedLoadTest(cluster_checks.BoundedLoadChecks, unittest.TestCase):
    KIND = "haproxy"


if __name__ == "__main__":
    unittest.main()
