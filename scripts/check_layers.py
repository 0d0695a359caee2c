#!/usr/bin/env python3
"""Checks that daemon/src's top-level modules import each other one way only: no cycles, and
none imports a module above it in LAYERS. Run by `make test` (docs/architecture.md explains the
layers)."""
import os
import re
import sys

ROOT = os.path.join(os.path.dirname(__file__), "..", "daemon", "src")
# Lowest first; a module may import only modules listed before it.
LAYERS = [
    "error", "sys", "config", "stop", "systemd", "auth", "criu", "archive", "engine", "catalog", "telemetry", "remote",
    "runtime", "service", "portability", "schedules", "http",
]


def module_of(path):
    rel = os.path.relpath(path, ROOT)
    top = rel.split(os.sep)[0]
    return top[:-3] if top.endswith(".rs") else top


def main():
    edges = {}
    for dirpath, _, files in os.walk(ROOT):
        for f in files:
            if not f.endswith(".rs") or f == "tests.rs":
                continue
            path = os.path.join(dirpath, f)
            mod = module_of(path)
            if mod in ("lib", "main"):
                continue
            text = open(path, encoding="utf-8").read()
            # Unit tests may reach anywhere.
            text = text.split("#[cfg(test)]")[0]
            for m in re.finditer(r"crate::([a-z_]+)", text):
                if m.group(1) != mod:
                    edges.setdefault(mod, set()).add(m.group(1))
    bad = []
    for a, targets in sorted(edges.items()):
        for b in sorted(targets):
            if a not in LAYERS or b not in LAYERS:
                bad.append(f"{a} -> {b}: add the module to LAYERS in scripts/check_layers.py")
            elif LAYERS.index(b) > LAYERS.index(a):
                bad.append(f"{a} imports {b}, which sits above it")
    if bad:
        print("layering violations:\n  " + "\n  ".join(bad))
        return 1
    print(f"layers ok: {len(edges)} modules import only modules below them")
    return 0


if __name__ == "__main__":
    sys.exit(main())
