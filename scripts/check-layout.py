#!/usr/bin/env python3
"""Checks the connector's layout (run by scripts/test.sh):

- no import cycle among the library's top-level modules (`crate::X` paths
  in code; comments and test code excluded);
- every source file opens with a `//!` header;
- no source file above 500 lines (unit-test files excepted);
- the simulator imports nothing from the connector, and the connector's
  library depends on the simulator only as a dev-dependency.

Prints the module graph with --graph.
"""
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
SRC = ROOT / "src"
MAX_LINES = 500


def top_module(path: pathlib.Path) -> str | None:
    rel = path.relative_to(SRC)
    if rel.parts[0] in ("lib.rs", "main.rs"):
        return None
    return rel.parts[0].removesuffix(".rs")


def without_tests(text: str) -> str:
    """Drops `#[cfg(test)] mod tests { ... }` blocks (brace-matched)."""
    out, i = [], 0
    for m in re.finditer(r"#\[cfg\(test\)\]\s*mod \w+ \{", text):
        if m.start() < i:
            continue
        out.append(text[i : m.start()])
        depth, j = 0, m.end() - 1
        while j < len(text):
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
            if depth == 0:
                break
        i = j
    out.append(text[i:])
    return "".join(out)


def is_test_file(path: pathlib.Path) -> bool:
    return path.name in ("tests.rs", "hostile.rs")


def main() -> int:
    problems = []
    graph: dict[str, set[str]] = {}
    for path in sorted(SRC.rglob("*.rs")):
        text = path.read_text()
        rel = path.relative_to(ROOT)
        if not text.startswith("//!"):
            problems.append(f"{rel}: no //! header")
        lines = text.count("\n")
        if lines > MAX_LINES and not is_test_file(path):
            problems.append(f"{rel}: {lines} lines (more than {MAX_LINES})")
        module = top_module(path)
        if module is None or is_test_file(path):
            continue
        deps = graph.setdefault(module, set())
        code = re.sub(r"//.*", "", without_tests(text))
        for dep in re.findall(r"\bcrate::(\w+)", code):
            if dep != module:
                deps.add(dep)

    # Cycles: depth-first search over the module graph.
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph.get(m, ())):
            if state.get(d) == 1:
                cycle = stack[stack.index(d) :] + [d]
                problems.append("import cycle: " + " -> ".join(cycle))
            elif d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)

    sim = ROOT / "crates" / "crustdata-sim"
    for path in sorted(sim.rglob("*.rs")):
        if "identify_connector" in path.read_text():
            problems.append(f"{path.relative_to(ROOT)}: the simulator imports the connector")
    manifest = (ROOT / "Cargo.toml").read_text()
    deps = manifest.split("[dependencies]", 1)[1].split("[dev-dependencies]", 1)[0]
    if "crustdata-sim" in deps or "testkit" in deps:
        problems.append("Cargo.toml: the connector depends on the simulator or the test kit outside dev-dependencies")

    if "--graph" in sys.argv:
        for m in sorted(graph):
            print(f"{m:>10} -> {', '.join(sorted(graph[m])) or '(nothing)'}")
    for p in problems:
        print(f"layout: {p}", file=sys.stderr)
    if not problems:
        print(f"layout: {len(graph)} modules, no import cycle, every file has a //! header and at most {MAX_LINES} lines")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
