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


CLI_COMMANDS = os.path.join(os.path.dirname(__file__), "..", "cli", "src", "commands")


def cli_cycles():
    """The CLI's command modules (cli/src/commands) must not import each other in a cycle."""
    edges = {}
    for f in os.listdir(CLI_COMMANDS):
        if not f.endswith(".rs") or f == "mod.rs":
            continue
        mod = f[:-3]
        text = open(os.path.join(CLI_COMMANDS, f), encoding="utf-8").read().split("#[cfg(test)]")[0]
        edges[mod] = {m.group(1) for m in re.finditer(r"crate::commands::([a-z_]+)", text)} - {mod}
    bad = []
    state = {}

    def visit(m, path):
        state[m] = "open"
        for n in sorted(edges.get(m, ())):
            if state.get(n) == "open":
                bad.append(" -> ".join(path[path.index(n):] + [n]) if n in path else f"{m} -> {n}")
            elif n not in state:
                visit(n, path + [n])
        state[m] = "done"

    for m in sorted(edges):
        if m not in state:
            visit(m, [m])
    return bad


def main():
    cycles = cli_cycles()
    if cycles:
        print("import cycles between the CLI's command modules:\n  " + "\n  ".join(cycles))
        return 1
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
    print(f"layers ok: {len(edges)} modules import only modules below them; no cycle in the CLI")
    return 0


if __name__ == "__main__":
    sys.exit(main())
