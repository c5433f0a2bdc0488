#!/usr/bin/env python3
"""Render a load-balancer template of deploy/ into a concrete config.

The templates (deploy/haproxy.cfg, deploy/nginx.conf) are written with
placeholders, so one file serves scripts/run-cluster.sh (fixed ports), the
tests (free ports) and an operator's several machines:

  @LB_GRPC_PORT@ @LB_HTTP_PORT@  the balancer's own gRPC and HTTP ports
  @LB_HOST@                      the address it binds (default 127.0.0.1)
  a line containing @K@          repeated once per instance, with @K@ = 1..N,
                                 @HOST@ its address, @GRPC@ / @HTTP@ its ports

  tools/render_lb.py deploy/haproxy.cfg out.cfg --lb-grpc 50053 --lb-http 8053 \\
      --instance 127.0.0.1:50061:8061 --instance 127.0.0.1:50062:8062

Comment lines (# ...) are copied as they are. Any other @NAME@ is an error, so a template and this script cannot drift
apart silently. --set NAME=VALUE fills further placeholders.
"""
import argparse
import re
import sys

TOKEN = re.compile(r"@([A-Z_]+)@")


def render(text, lb_grpc, lb_http, instances, lb_host="127.0.0.1", extra=None):
    """instances: list of (host, grpc_port, http_port)."""
    scalars = {"LB_GRPC_PORT": str(lb_grpc), "LB_HTTP_PORT": str(lb_http), "LB_HOST": lb_host}
    scalars.update(extra or {})
    out = []
    for line in text.splitlines(keepends=True):
        if line.lstrip().startswith("#"):
            out.append(line)  # comments may name the placeholders
        elif "@K@" in line:
            for k, (host, grpc, http) in enumerate(instances, 1):
                vals = dict(scalars, K=str(k), HOST=host, GRPC=str(grpc), HTTP=str(http))
                out.append(_fill(line, vals))
        else:
            out.append(_fill(line, scalars))
    return "".join(out)


def _fill(line, vals):
    def sub(m):
        if m.group(1) not in vals:
            raise ValueError("unknown placeholder @%s@ in: %s" % (m.group(1), line.strip()))
        return vals[m.group(1)]
    return TOKEN.sub(sub, line)


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("template")
    ap.add_argument("out")
    ap.add_argument("--lb-grpc", type=int, required=True)
    ap.add_argument("--lb-http", type=int, required=True)
    ap.add_argument("--lb-host", default="127.0.0.1")
    ap.add_argument("--instance", action="append", default=[], metavar="HOST:GRPC:HTTP")
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    a = ap.parse_args(argv)
    inst = []
    for s in a.instance:
        host, grpc, http = s.rsplit(":", 2)
        inst.append((host, int(grpc), int(http)))
    if not inst:
        ap.error("at least one --instance")
    extra = dict(kv.split("=", 1) for kv in a.set)
    with open(a.template) as f:
        text = render(f.read(), a.lb_grpc, a.lb_http, inst, a.lb_host, extra)
    with open(a.out, "w") as f:
        f.write(text)


if __name__ == "__main__":
    main(sys.argv[1:])
