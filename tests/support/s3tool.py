"""The tests' hands on the S3 test server (moto), through boto3: set it up with a real IAM user
(so that every request after the first few must be signed with SigV4), and look at or damage
what the daemons stored. Run with the set-up virtualenv's python."""
import json
import sys

import boto3


def client(ep, creds, service="s3"):
    return boto3.client(service, endpoint_url=ep, region_name="us-east-1",
                        aws_access_key_id=creds[0], aws_secret_access_key=creds[1])


def main():
    cmd, ep = sys.argv[1], sys.argv[2]
    if cmd == "setup":
        # The server lets its first three requests through unsigned (INITIAL_NO_AUTH_ACTION_COUNT=3):
        # these three make the user, its key and its policy.
        iam = client(ep, ("bootstrap", "bootstrap"), "iam")
        iam.create_user(UserName="ckptd")
        key = iam.create_access_key(UserName="ckptd")["AccessKey"]
        iam.put_user_policy(UserName="ckptd", PolicyName="s3", PolicyDocument=json.dumps(
            {"Version": "2012-10-17",
             "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
        creds = (key["AccessKeyId"], key["SecretAccessKey"])
        for b in sys.argv[3:]:
            client(ep, creds).create_bucket(Bucket=b)
        print(json.dumps({"access_key_id": creds[0], "secret_access_key": creds[1]}))
        return
    creds, bucket = (sys.argv[3], sys.argv[4]), sys.argv[5]
    s3 = client(ep, creds)
    if cmd == "objects":
        keys = []
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            keys += [o["Key"] for o in page.get("Contents", [])]
        print(json.dumps(keys))
    elif cmd == "uploads":
        r = s3.list_multipart_uploads(Bucket=bucket)
        print(json.dumps([u["Key"] for u in r.get("Uploads", [])]))
    elif cmd == "get":
        sys.stdout.buffer.write(s3.get_object(Bucket=bucket, Key=sys.argv[6])["Body"].read())
    elif cmd == "put":
        # The object's body is the file named (a hostile writer's object).
        s3.put_object(Bucket=bucket, Key=sys.argv[6], Body=open(sys.argv[7], "rb").read())
    elif cmd == "flip":
        key, offset = sys.argv[6], int(sys.argv[7])
        body = bytearray(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
        body[offset] ^= 0xFF
        s3.put_object(Bucket=bucket, Key=key, Body=bytes(body))
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
