"""The lab's performance benchmarks: `python -m bench` (`make bench`).

One module per benchmark (`bulk_load`, `query`, `streaming`, `api`, `memory`,
`notebooks`), each with `run(size) -> Result`; `bench.common` holds what they share and
`bench.run` runs them and writes the report. See `bench/README.md`.
"""
