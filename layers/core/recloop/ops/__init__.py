"""Operations: latency and counter metrics shared across instances, CloudWatch metrics, dependency health."""
