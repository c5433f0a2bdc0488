#!/usr/bin/env python3
"""The import graph of src/ points one way (docs/ARCHITECTURE.md, "Layers").

    tools/check_layers.py SRC_DIR

Each folder of src/ is a layer, lowest first: core, media, model, net, serve;
src/main.c sits above them all. A file may include headers of its own layer
and of layers below it, never above. Library headers are confined too: gRPC
to net (and main.c), ONNX Runtime to model, libmicrohttpd to net. Prints every
arrow that breaks a rule and exits 1 if there is one; a header that no folder
holds is an error too (a file outside the layers would escape the check).
"""
import os
import re
import sys

LAYERS = ["core", "media", "model", "net", "serve"]
TOP = len(LAYERS)  # main.c
# Library headers by include prefix -> the layers allowed to include them.
LIBRARIES = {
    "grpc/": {"net", "main"},
    "onnxruntime": {"model"},
    "microhttpd": {"net"},
}
INCLUDE = re.compile(r'^\s*#\s*include\s*([<"])([^">]+)[">]', re.M)


def main(src):
    where = {}  # header name -> layer
    files = []
    for layer in LAYERS:
        d = os.path.join(src, layer)
        if not os.path.isdir(d):
            print(f"check_layers: missing layer folder {d}")
            return 1
        for name in sorted(os.listdir(d)):
            if name.endswith((".c", ".h")):
                files.append((layer, os.path.join(d, name)))
                if name.endswith(".h"):
                    where[name] = layer
    for name in sorted(os.listdir(src)):
        path = os.path.join(src, name)
        if name.endswith((".c", ".h")):
            if name != "main.c":
                print(f"check_layers: {path} is in no layer folder")
                return 1
            files.append(("main", path))
    rank = {layer: i for i, layer in enumerate(LAYERS)}
    rank["main"] = TOP
    bad = 0
    for layer, path in files:
        text = open(path, encoding="utf-8").read()
        for kind, header in INCLUDE.findall(text):
            rel = os.path.relpath(path, src)
            if kind == '"':
                base = os.path.basename(header)
                if base.endswith(".pb-c.h"):
                    continue  # generated protobuf code: the wire format's
                if base not in where:
                    print(f"{rel}: includes \"{header}\", which no layer holds")
                    bad += 1
                elif rank[where[base]] > rank[layer]:
                    print(f"{rel} ({layer}) -> {header} ({where[base]}): an upward arrow")
                    bad += 1
            else:
                for prefix, allowed in LIBRARIES.items():
                    if header.startswith(prefix) and layer not in allowed:
                        print(f"{rel} ({layer}) -> <{header}>: only {', '.join(sorted(allowed))} may use it")
                        bad += 1
    n = len(files)
    print(f"check_layers: {n} files, {bad} arrow(s) against the layering")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "src"))
