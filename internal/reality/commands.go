package reality

const commandsMD = `# Reproduce this bundle

From a fresh clone, on a machine with Go (Docker is installed and started
by the run when missing: apt packages docker.io and docker-compose, dockerd
--bridge=none --iptables=false --ip6tables=false; every service uses the host
network and listens on 127.0.0.1 only):

` + "```sh" + `
make reality          # stack up, scenario, kill -9 + restart, exports, replay, test suites, this bundle
make reality-verify   # offline: SHA256SUMS, replay of the exports == replay_report.json, GREEN
` + "```" + `

Without Docker, the same scenario as plain processes of the built binaries
bin/exoarmur and bin/exoarmur-lab (gate 4 is then reported NOT RUN):

` + "```sh" + `
make reality LOCAL=1
make reality-verify
` + "```" + `

What each file proves:

- 00_execution_surface.md: every execution path and side-effect call site, generated from the source; 11_inventory_check.txt shows it is current and clean.
- 01/03/05/07 *_design.md: the kill switch, tenancy, approval and auth designs.
- 02_gate5, 04_gate6, 06_a3, 08_auth *_test_outputs.txt: the go test -v output of each suite, then the reality scenario's own checks for that gate.
- 09_all_tests.txt: go test ./... (every unit and integration test). 10_golden_demo.txt: the golden demo.
- audit_export_acme.jsonl, audit_export_beta.jsonl: each tenant's hash chain, exported after every service was killed with SIGKILL and restarted.
- replay_report.json: the offline replay of those exports (chains verified, every decision recomputed); make reality-verify recomputes it byte for byte. The nodes run exoarmur-lab serve with an evidence clock and seeded keys (exoarmur-lab, never the production binary), so two runs produce the same report.
- service_logs.txt: the logs of NATS, the sink and both nodes. checks.json: every scenario check with its detail.
- PASS_FAIL.txt: one line per gate, each from checks that can fail, and OVERALL GREEN or RED. SHA256SUMS: every other file.
`
