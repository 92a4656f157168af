//! Config, validated plan, and the running topology: sources, log, processing, lake.
