variable "name" {
  description = "Prefix of every resource's name."
  type        = string
  default     = "tickflow"
}

variable "region" {
  description = "The AWS region to deploy to."
  type        = string
  default     = "us-east-1"
}

variable "lambda_zip" {
  description = "The function's package: `bootstrap` (the tickflow binary) and `tickflow.toml`, as deploy/lambda/package builds it."
  type        = string
}

variable "architecture" {
  description = "x86_64 or arm64, as the binary in the package was built for."
  type        = string
  default     = "x86_64"
}

variable "memory_mb" {
  description = "The function's memory; CPU grows with it."
  type        = number
  default     = 1024
}

variable "timeout_secs" {
  description = "The longest one invocation may take. The queue's visibility timeout is six times this, as Lambda advises."
  type        = number
  default     = 60
}

variable "batch_size" {
  description = "Messages per invocation, at most 10 (the old pipeline's batch)."
  type        = number
  default     = 10
}

variable "concurrency" {
  description = "Execution environments the queue keeps busy at once (2 to 1000): the mapping's maximum concurrency, and the function's reserved concurrency, so the mapping is never throttled."
  type        = number
  default     = 2
}

variable "max_receives" {
  description = "Receives after which SQS moves a message to the dead-letter queue."
  type        = number
  default     = 5
}

variable "alarm_topic_arn" {
  description = "Where the CloudWatch alarms notify; empty makes a topic for them."
  type        = string
  default     = ""
}

variable "log_retention_days" {
  description = "How long the function's logs are kept."
  type        = number
  default     = 365
}
