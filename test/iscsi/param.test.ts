import { test } from "node:test";
import assert from "node:assert/strict";
import {
  LoginFailure,
  defaultParams,
  negotiateOperationalKeys,
  parseTextKeys,
  type KeyValue,
  type TargetOffer,
} from "../../src/iscsi/param.js";

const OFFER: TargetOffer = {
  headerDigestRequired: false,
  dataDigestRequired: false,
  maxRecvDataSegmentLength: 65536,
  maxConnections: 2,
  initialR2T: true,
  immediateData: true,
  maxBurstLength: 1048576,
  firstBurstLength: 8192,
  defaultTime2Wait: 2,
  defaultTime2Retain: 20,
  maxOutstandingR2T: 1,
  errorRecoveryLevel: 0,
};

function negotiate(pairs: KeyValue[], offer: Partial<TargetOffer> = {}, leading = true) {
  const params = defaultParams(65536);
  const out = negotiateOperationalKeys(
    pairs,
    { offer: { ...OFFER, ...offer }, leadingConnection: leading, discovery: false, seen: new Set() },
    params,
  );
  return { out: new Map(out), params };
}

const CASES: { name: string; offer: KeyValue; answer: string | undefined; target?: Partial<TargetOffer> }[] =
  [
    { name: "list: first supported", offer: ["HeaderDigest", "CRC32C,None"], answer: "CRC32C" },
    { name: "list: None honoured", offer: ["DataDigest", "None"], answer: "None" },
    { name: "list: nothing common", offer: ["HeaderDigest", "MD5"], answer: "Reject" },
    { name: "min: MaxConnections", offer: ["MaxConnections", "8"], answer: "2" },
    { name: "min: MaxBurstLength", offer: ["MaxBurstLength", "262144"], answer: "262144" },
    { name: "min: FirstBurstLength", offer: ["FirstBurstLength", "65536"], answer: "8192" },
    { name: "max: DefaultTime2Wait", offer: ["DefaultTime2Wait", "0"], answer: "2" },
    { name: "min: DefaultTime2Retain", offer: ["DefaultTime2Retain", "0"], answer: "0" },
    { name: "min: ErrorRecoveryLevel capped at 0", offer: ["ErrorRecoveryLevel", "2"], answer: "0" },
    { name: "numeric out of range", offer: ["MaxBurstLength", "100"], answer: "Reject" },
    { name: "numeric garbage", offer: ["MaxOutstandingR2T", "many"], answer: "Reject" },
    { name: "OR: InitialR2T No vs Yes", offer: ["InitialR2T", "No"], answer: "Yes" },
    {
      name: "OR: InitialR2T No vs No",
      offer: ["InitialR2T", "No"],
      answer: "No",
      target: { initialR2T: false },
    },
    {
      name: "AND: ImmediateData Yes vs No",
      offer: ["ImmediateData", "Yes"],
      answer: "No",
      target: { immediateData: false },
    },
    { name: "boolean garbage", offer: ["ImmediateData", "Maybe"], answer: "Reject" },
    { name: "markers off", offer: ["OFMarker", "Yes"], answer: "No" },
    { name: "marker interval irrelevant", offer: ["IFMarkInt", "2048~8192"], answer: "Irrelevant" },
    { name: "unknown key", offer: ["X-com.example.Frob", "1"], answer: "NotUnderstood" },
    { name: "target-only declarative", offer: ["TargetAddress", "1.2.3.4"], answer: "Irrelevant" },
    {
      name: "initiator MRDSL is declarative",
      offer: ["MaxRecvDataSegmentLength", "4096"],
      answer: undefined,
    },
  ];

for (const c of CASES) {
  test(`negotiation: ${c.name}`, () => {
    const { out } = negotiate([c.offer], c.target);
    assert.equal(out.get(c.offer[0]), c.answer);
  });
}

test("negotiation records the results", () => {
  const { params } = negotiate([
    ["HeaderDigest", "CRC32C"],
    ["MaxRecvDataSegmentLength", "4096"],
    ["MaxBurstLength", "4096"],
    ["FirstBurstLength", "65536"],
  ]);
  assert.equal(params.headerDigest, true);
  assert.equal(params.initiatorMaxRecvDataSegmentLength, 4096);
  assert.equal(params.maxBurstLength, 4096);
  assert.ok(params.firstBurstLength <= params.maxBurstLength);
});

test("a required digest refused by the initiator fails the login", () => {
  assert.throws(() => negotiate([["HeaderDigest", "None"]], { headerDigestRequired: true }), LoginFailure);
});

test("session keys on a non-leading connection are Irrelevant", () => {
  assert.equal(negotiate([["MaxBurstLength", "4096"]], {}, false).out.get("MaxBurstLength"), "Irrelevant");
});

test("a key offered twice fails the negotiation", () => {
  assert.throws(
    () =>
      negotiate([
        ["MaxBurstLength", "4096"],
        ["MaxBurstLength", "8192"],
      ]),
    (e: LoginFailure) => e.statusClass === 2 && e.statusDetail === 0,
  );
});

test("text parsing: NUL separated, trailing NUL optional, malformed item refused", () => {
  assert.deepEqual(parseTextKeys(Buffer.from("A=1\0B=x=y")), [
    ["A", "1"],
    ["B", "x=y"],
  ]);
  assert.throws(() => parseTextKeys(Buffer.from("novalue\0")), LoginFailure);
});
