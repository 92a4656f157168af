# The function's role: exactly the calls tickflow lambda and the event source mapping make,
# each on its own resource.

data "aws_iam_policy_document" "assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["lambda.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "function" {
  name               = "${var.name}-lambda"
  assume_role_policy = data.aws_iam_policy_document.assume.json
}

data "aws_iam_policy_document" "function" {
  # The event source mapping, under the function's role: receive and delete the batches.
  statement {
    sid       = "ReadTheQueue"
    actions   = ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"]
    resources = [aws_sqs_queue.ticks.arn]
  }

  # A message tickflow cannot read goes to the dead-letter queue with its reason.
  statement {
    sid       = "SendDeadLetters"
    actions   = ["sqs:SendMessage"]
    resources = [aws_sqs_queue.dead_letters.arn]
  }

  # The DynamoDB sink: rows in batches, or one by one to single out one DynamoDB refuses.
  statement {
    sid       = "WriteRows"
    actions   = ["dynamodb:BatchWriteItem", "dynamodb:PutItem"]
    resources = [aws_dynamodb_table.tables["trades"].arn]
  }

  # ... and its position, read at start and moved forward conditionally.
  statement {
    sid       = "KeepThePosition"
    actions   = ["dynamodb:GetItem", "dynamodb:PutItem"]
    resources = [aws_dynamodb_table.tables["state"].arn]
  }

  # The S3 JSON sink: objects under processed/, and its position beside them.
  statement {
    sid       = "WriteProcessedJson"
    actions   = ["s3:PutObject", "s3:GetObject"]
    resources = ["${aws_s3_bucket.data.arn}/processed/*"]
  }

  # ... whose position, before its first flush, must read as missing (404) rather than
  # forbidden (403): S3 says which only to a principal that may list the prefix.
  statement {
    sid       = "SeeMissingPositions"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.data.arn]
    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["processed/*"]
    }
  }

  # The SNS notifier.
  statement {
    sid       = "PublishAlerts"
    actions   = ["sns:Publish"]
    resources = [aws_sns_topic.alerts.arn]
  }

  # The runtime's stderr, which Lambda sends to CloudWatch Logs.
  statement {
    sid       = "WriteLogs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.function.arn}:*"]
  }
}

resource "aws_iam_role_policy" "function" {
  name   = "${var.name}-lambda"
  role   = aws_iam_role.function.id
  policy = data.aws_iam_policy_document.function.json
}
