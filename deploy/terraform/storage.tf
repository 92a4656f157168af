# DynamoDB: the trades, keyed on the natural key (pk, sk), and the sinks' positions.
locals {
  tables = ["trades", "state"]
}

resource "aws_dynamodb_table" "tables" {
  #checkov:skip=CKV_AWS_119:Encrypted with the AWS managed key; a customer key would add KMS grants tickflow never calls.
  for_each     = toset(local.tables)
  name         = "${var.name}-${replace(each.key, "_", "-")}"
  billing_mode = "PAY_PER_REQUEST"
  hash_key     = "pk"
  range_key    = "sk"

  attribute {
    name = "pk"
    type = "S"
  }

  attribute {
    name = "sk"
    type = "S"
  }

  point_in_time_recovery {
    enabled = true
  }

  server_side_encryption {
    enabled = true
  }
}

# S3: the processed rows as JSON for Athena under processed/.
resource "aws_s3_bucket" "data" {
  #checkov:skip=CKV_AWS_18:Access logging needs a second bucket of the account's own choosing.
  #checkov:skip=CKV_AWS_144:Cross-region replication is a choice of the account, not of tickflow.
  #checkov:skip=CKV_AWS_145:SSE-S3 encryption; a customer key would add KMS grants tickflow never calls.
  #checkov:skip=CKV2_AWS_62:Nothing subscribes to the bucket's events; Athena reads it.
  bucket_prefix = "${var.name}-data-"
}

resource "aws_s3_bucket_public_access_block" "data" {
  bucket                  = aws_s3_bucket.data.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_versioning" "data" {
  bucket = aws_s3_bucket.data.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "data" {
  bucket = aws_s3_bucket.data.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "data" {
  bucket = aws_s3_bucket.data.id
  rule {
    id     = "old-versions-and-uploads"
    status = "Enabled"
    filter {}
    noncurrent_version_expiration {
      noncurrent_days = 30
    }
    abort_incomplete_multipart_upload {
      days_after_initiation = 1
    }
  }
}

# SNS: the alerts tickflow raises.
resource "aws_sns_topic" "alerts" {
  name              = "${var.name}-alerts"
  kms_master_key_id = "alias/aws/sns"
}

# The alarms' topic, unless alarm_topic_arn names one: its own key, since CloudWatch cannot
# publish to a topic under the AWS managed SNS key.
resource "aws_kms_key" "alarms" {
  count               = var.alarm_topic_arn == "" ? 1 : 0
  description         = "${var.name}: the alarms topic"
  enable_key_rotation = true
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Sid       = "Account"
        Effect    = "Allow"
        Principal = { AWS = "arn:aws:iam::${data.aws_caller_identity.current.account_id}:root" }
        Action    = "kms:*"
        Resource  = "*"
      },
      {
        Sid       = "CloudWatchPublishes"
        Effect    = "Allow"
        Principal = { Service = "cloudwatch.amazonaws.com" }
        Action    = ["kms:Decrypt", "kms:GenerateDataKey*"]
        Resource  = "*"
      },
    ]
  })
}

resource "aws_sns_topic" "alarms" {
  count             = var.alarm_topic_arn == "" ? 1 : 0
  name              = "${var.name}-alarms"
  kms_master_key_id = aws_kms_key.alarms[0].id
}
