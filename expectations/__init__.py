"""Great Expectations suites written as code, and the runner that gates the DAGs."""
