"""Operations: latency and counter metrics shared across instances, dependency health."""
