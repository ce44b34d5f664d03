"""The only code that talks to Redis keys and AWS services: connections, the key layout, S3, Kinesis, SQS, Lambda."""
