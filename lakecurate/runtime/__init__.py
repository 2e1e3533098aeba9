"""What every command runs on: config objects and their checks, the Spark session,
the job protocol (`jobkit`), errors, logging and the lake's writer lease."""
