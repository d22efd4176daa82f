// Where the S3 suites find their gateway: .ci/run starts one on 127.0.0.1 and
// exports these; without them the suites skip themselves and say so.

import { S3Client } from "@aws-sdk/client-s3"

export const endpoint = process.env.CAIRN_TEST_S3_ENDPOINT
export const bucket = process.env.CAIRN_TEST_S3_BUCKET
export const enabled = Boolean(endpoint && bucket && process.env.AWS_ACCESS_KEY_ID && process.env.AWS_SECRET_ACCESS_KEY)

export function announceSkip(suite: string): void {
  if (!enabled) console.log(`${suite} skipped: set CAIRN_TEST_S3_ENDPOINT (see .ci/run)`)
}

/** A client for the tests' own setup and inspection (buckets, listings), outside cairn. */
export function adminClient(): S3Client {
  return new S3Client({
    region: process.env.AWS_REGION ?? "us-east-1",
    endpoint: endpoint!,
    forcePathStyle: true,
    requestChecksumCalculation: "WHEN_REQUIRED",
    responseChecksumValidation: "WHEN_REQUIRED",
  })
}
