"""Entry point in LocalStack's `localstack.lambda.runtime_executor` namespace (LAMBDA_RUNTIME_EXECUTOR=subprocess)."""

from localstack.services.lambda_.invocation.plugins import RuntimeExecutorPlugin


class SubprocessRuntimeExecutorPlugin(RuntimeExecutorPlugin):
    name = "subprocess"

    def load(self, *args, **kwargs):
        from recloop_lambda_executor.executor import SubprocessRuntimeExecutor

        return SubprocessRuntimeExecutor
