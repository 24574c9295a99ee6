"""Known vulnerabilities in the installed packages, with pip-audit; says plainly when it could not check.

pip-audit asks a vulnerability service about every installed distribution. Offline, or behind a
package mirror that serves only the simple index, every package comes back "not found" and pip-audit
still prints "No known vulnerabilities found": here that counts as *not audited*, never as clean.

``python -m benchmarks.audit``: exit 0 when every package was checked and none is affected,
1 when some are affected, 3 when the services could not be reached (nothing, or not everything, audited).
"""

from __future__ import annotations

import json
import subprocess
import sys

from benchmarks import cli

SERVICES = ("pypi", "osv")


def audit(timeout: float = 600) -> dict:
    """Run pip-audit against each service until one answers; returns what was checked and found."""
    attempts = []
    for service in SERVICES:
        try:
            p = subprocess.run([sys.executable, "-m", "pip_audit", "--progress-spinner", "off", "--skip-editable",
                                "-s", service, "-f", "json"], capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            attempts.append({"service": service, "error": f"no answer within {timeout:.0f} s"})
            continue
        except OSError as exc:
            attempts.append({"service": service, "error": str(exc)})
            continue
        try:
            report = json.loads(p.stdout)
        except ValueError:
            if "No module named pip_audit" in p.stderr:
                return {"installed": False, "attempts": attempts, "audited": 0, "packages": 0, "vulnerable": []}
            last = (p.stderr.strip().splitlines() or ["no output"])[-1]
            attempts.append({"service": service, "error": last[:300]})
            continue
        deps = report.get("dependencies", [])
        audited = [d for d in deps if "skip_reason" not in d]
        vulnerable = [{"name": d["name"], "version": d.get("version"), "ids": [v["id"] for v in d.get("vulns", [])]}
                      for d in audited if d.get("vulns")]
        attempt = {"service": service, "packages": len(deps), "audited": len(audited), "vulnerable": vulnerable,
                   "skipped_example": next((d["skip_reason"] for d in deps if "skip_reason" in d), "")}
        attempts.append(attempt)
        if audited:
            return {"installed": True, "attempts": attempts, **attempt}
    packages = max((a.get("packages", 0) for a in attempts), default=0)
    return {"installed": True, "attempts": attempts, "service": None, "packages": packages, "audited": 0,
            "vulnerable": []}


def summary(result: dict) -> tuple[int, list[str]]:
    """(exit status, lines to print) for an :func:`audit` result."""
    if not result["installed"]:
        return 3, ["audit: pip-audit is not installed; pip install -e '.[dev]'"]
    lines = []
    for a in result["attempts"]:
        if "error" in a:
            lines.append(f"audit: {a['service']}: unreachable ({a['error']})")
        else:
            lines.append(f"audit: {a['service']}: {a['audited']} of {a['packages']} packages checked"
                         + (f" (e.g. {a['skipped_example']})" if a["audited"] < a["packages"] else ""))
    if result["audited"] == 0:
        lines.append("audit: NOT AUDITED: no vulnerability database could be reached (pip-audit needs PyPI's JSON "
                     "API or OSV on the network); this is no statement about vulnerabilities")
        return 3, lines
    for v in result["vulnerable"]:
        lines.append(f"audit: VULNERABLE {v['name']} {v['version']}: {', '.join(v['ids'])}")
    if result["vulnerable"]:
        return 1, lines
    if result["audited"] < result["packages"]:
        lines.append(f"audit: no known vulnerabilities in the {result['audited']} packages checked; "
                     f"{result['packages'] - result['audited']} could not be checked")
        return 3, lines
    lines.append(f"audit: no known vulnerabilities in {result['audited']} packages")
    return 0, lines


def main(argv: list[str] | None = None) -> int:
    """Audit the installed packages and print the verdict; the exit status says what it means (see above)."""
    parser = cli.parser("audit", __doc__)
    parser.add_argument("--timeout", type=cli.positive(float), default=600.0,
                        help="seconds to wait for each vulnerability service (default 600)")
    ns = parser.parse_args(argv)
    status, lines = summary(audit(ns.timeout))
    print("\n".join(lines))
    return status


if __name__ == "__main__":
    cli.run(main)
