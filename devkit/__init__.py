"""Development tools that the runtime pipeline never imports: the sample-data generator, the sandbox
receiving servers, the in-process DAG runner and the multi-day replay. The CLI's `generate` and `demo`
commands, the tests and the benchmarks use them."""
