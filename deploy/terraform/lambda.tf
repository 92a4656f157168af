resource "aws_cloudwatch_log_group" "function" {
  #checkov:skip=CKV_AWS_158:AWS-owned encryption; a customer key would add KMS grants tickflow never calls.
  name              = "/aws/lambda/${var.name}"
  retention_in_days = var.log_retention_days
}

resource "aws_lambda_function" "tickflow" {
  #checkov:skip=CKV_AWS_50:tickflow sends no X-Ray segments; tracing would only add permissions it never uses.
  #checkov:skip=CKV_AWS_116:Invoked by the SQS mapping, not asynchronously: failed messages go to the queue's own dead-letter queue.
  #checkov:skip=CKV_AWS_117:Reaches only public AWS endpoints; put it in a VPC with endpoints if the account requires it.
  #checkov:skip=CKV_AWS_173:The environment holds names and URLs, no secrets.
  #checkov:skip=CKV_AWS_272:Code signing needs a signing profile of the account's own.
  function_name                  = var.name
  description                    = "tickflow lambda: ticks from SQS into DynamoDB, S3 JSON and SNS alerts"
  role                           = aws_iam_role.function.arn
  filename                       = var.lambda_zip
  source_code_hash               = filebase64sha256(var.lambda_zip)
  runtime                        = "provided.al2023"
  handler                        = "bootstrap"
  architectures                  = [var.architecture]
  memory_size                    = var.memory_mb
  timeout                        = var.timeout_secs
  reserved_concurrent_executions = var.concurrency

  ephemeral_storage {
    size = 2048
  }

  environment {
    variables = {
      TICKFLOW_DATA_DIR     = "/tmp/tickflow"
      TICKFLOW_QUEUE_URL    = aws_sqs_queue.ticks.url
      TICKFLOW_DLQ_URL      = aws_sqs_queue.dead_letters.url
      TICKFLOW_TABLE_PREFIX = var.name
      TICKFLOW_BUCKET       = aws_s3_bucket.data.bucket
      TICKFLOW_TOPIC_ARN    = aws_sns_topic.alerts.arn
      RUST_LOG              = "info"
    }
  }

  depends_on = [aws_cloudwatch_log_group.function, aws_iam_role_policy.function]
}

# The mapping polls the queue and invokes the function with up to `batch_size` messages; the
# function lists the ones to receive again, so one bad message never fails its batch-mates.
resource "aws_lambda_event_source_mapping" "ticks" {
  event_source_arn        = aws_sqs_queue.ticks.arn
  function_name           = aws_lambda_function.tickflow.arn
  batch_size              = var.batch_size
  function_response_types = ["ReportBatchItemFailures"]

  scaling_config {
    maximum_concurrency = var.concurrency
  }
}
