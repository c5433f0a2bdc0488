"""Scale-out behind nginx (deploy/nginx.conf, the documented alternative):
the same affinity and failover checks as test_cluster_haproxy.py. nginx has
no bounded-load hashing, so there is no spill test here."""

import unittest

import cluster_checks


class NginxAffinityTest(cluster_checks.AffinityChecks, unittest.TestCase):
    KIND = "nginx"


class NginxFailoverTest(cluster_checks.FailoverChecks, unittest.TestCase):
    KIND = "nginx"


if __name__ == "__main__":
    unittest.main()
