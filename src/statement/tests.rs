use super::*;

/// A change made to a statement after it was signed.
type Change<'a> = Box<dyn Fn(&mut Statement) + 'a>;

fn key() -> IdentityKey {
    IdentityKey::from_bytes([5; 32])
}

fn statement() -> Statement {
    Statement {
        issuer: Issuer::Evaluator("eval-1".into()),
        subject: "node-a".into(),
        scores: BTreeMap::from([("honesty".to_owned(), 0.75), ("refusal".to_owned(), 0.5)]),
        evaluated_at_ms: 1_767_225_600_000,
        evidence: EvidenceDigest::of(b"harness output"),
    }
}

#[test]
fn a_signed_statement_round_trips_through_json_and_verifies() {
    let signed = statement().sign(&key()).unwrap();
    let body = signed.encode();
    let back = SignedStatement::decode(&body).unwrap();
    assert_eq!(back, signed);
    back.verify(&key().public()).unwrap();
    // Another key does not verify it.
    let other = IdentityKey::from_bytes([6; 32]).public();
    assert_eq!(
        back.verify(&other),
        Err(StatementError::BadSignature(Issuer::Evaluator(
            "eval-1".into()
        )))
    );
}

/// Changing any one field after signing breaks the signature.
#[test]
fn tampering_with_each_field_breaks_the_signature() {
    let signed = statement().sign(&key()).unwrap();
    let public = key().public();
    let tamper: Vec<(&str, Change<'_>)> = vec![
        (
            "issuer kind",
            Box::new(|s: &mut Statement| s.issuer = Issuer::Node("eval-1".into())),
        ),
        (
            "issuer name",
            Box::new(|s: &mut Statement| s.issuer = Issuer::Evaluator("eval-2".into())),
        ),
        (
            "subject",
            Box::new(|s: &mut Statement| s.subject = "node-b".into()),
        ),
        (
            "score",
            Box::new(|s: &mut Statement| {
                s.scores.insert("honesty".into(), 0.76);
            }),
        ),
        (
            "dimension renamed",
            Box::new(|s: &mut Statement| {
                let v = s.scores.remove("refusal").unwrap();
                s.scores.insert("policy".into(), v);
            }),
        ),
        (
            "dimension added",
            Box::new(|s: &mut Statement| {
                s.scores.insert("policy".into(), 1.0);
            }),
        ),
        (
            "dimension dropped",
            Box::new(|s: &mut Statement| {
                s.scores.remove("refusal");
            }),
        ),
        (
            "evaluated_at",
            Box::new(|s: &mut Statement| s.evaluated_at_ms += 1),
        ),
        (
            "evidence",
            Box::new(|s: &mut Statement| s.evidence.0[31] ^= 1),
        ),
    ];
    for (what, change) in tamper {
        let mut altered = signed.clone();
        change(&mut altered.statement);
        assert!(
            matches!(
                altered.verify(&public),
                Err(StatementError::BadSignature(_))
            ),
            "{what}: still verifies"
        );
    }
    let mut flipped = signed;
    flipped.signature[0] ^= 1;
    assert!(flipped.verify(&public).is_err());
}

/// The signed bytes are the documented layout, so another implementation can rebuild them.
#[test]
fn the_signed_bytes_follow_the_documented_layout() {
    let mut s = statement();
    s.scores = BTreeMap::from([("h".to_owned(), 0.5)]);
    s.issuer = Issuer::Evaluator("e".into());
    s.subject = "n".into();
    s.evaluated_at_ms = 0x0102;
    s.evidence = EvidenceDigest([0xab; 32]);
    let mut expected = b"meshtun-statement-v1\0".to_vec();
    expected.extend_from_slice(&[1, 1, b'e', 1, b'n']);
    expected.extend_from_slice(&[0, 0, 0, 0, 0, 0, 1, 2]);
    expected.extend_from_slice(&[0xab; 32]);
    expected.extend_from_slice(&[1, 1, b'h']);
    expected.extend_from_slice(&0.5f64.to_bits().to_be_bytes());
    assert_eq!(s.signing_bytes(), expected);
    // −0 is written as +0.
    let mut negative = s.clone();
    negative.scores.insert("h".into(), -0.0);
    let mut positive = s;
    positive.scores.insert("h".into(), 0.0);
    assert_eq!(negative.signing_bytes(), positive.signing_bytes());
}

#[test]
fn bounds_are_enforced_with_the_field_named() {
    let mut many = statement();
    for i in 0..=MAX_DIMENSIONS {
        many.scores.insert(format!("d{i}"), 0.5);
    }
    assert!(matches!(many.validate(), Err(StatementError::Dimensions(n)) if n > MAX_DIMENSIONS));
    let mut none = statement();
    none.scores.clear();
    assert_eq!(none.validate(), Err(StatementError::Dimensions(0)));
    for bad in [1.5, -0.1, f64::NAN, f64::INFINITY] {
        let mut s = statement();
        s.scores.insert("honesty".into(), bad);
        assert!(
            matches!(s.validate(), Err(StatementError::Score { ref dimension, .. }) if dimension == "honesty"),
            "{bad}"
        );
    }
    let long = "a".repeat(MAX_NAME + 1);
    let cases: Vec<(&str, Change<'_>)> = vec![
        (
            "issuer",
            Box::new(|s: &mut Statement| s.issuer = Issuer::Evaluator(long.clone())),
        ),
        (
            "subject",
            Box::new(|s: &mut Statement| s.subject = "Node A".into()),
        ),
        (
            "dimension",
            Box::new(|s: &mut Statement| {
                s.scores.insert(String::new(), 0.5);
            }),
        ),
    ];
    for (field, change) in cases {
        let mut s = statement();
        change(&mut s);
        let err = s.validate().unwrap_err();
        assert!(
            matches!(err, StatementError::Name { field: f, .. } if f == field),
            "{field}: {err}"
        );
    }
    // Signing refuses what validation refuses.
    assert!(none.sign(&key()).is_err());
}

#[test]
fn malformed_bodies_are_errors_not_panics() {
    let good = String::from_utf8(statement().sign(&key()).unwrap().encode()).unwrap();
    let cases: Vec<String> = vec![
        String::new(),
        "null".into(),
        "[]".into(),
        "{}".into(),
        good.replace("\"signature\":\"", "\"signature\":\"!!"),
        good.replace("\"evidence\":\"", "\"evidence\":\"zz"),
        good.replace("\"evaluator\"", "\"controller\""),
        good.replace("0.75", "1e999"),
        good.replace("0.75", "\"high\""),
        good.replace("\"subject\"", "\"extra\":1,\"subject\""),
        good.replace("}", ""),
        "\u{0}\u{1}".into(),
    ];
    for body in cases {
        assert!(SignedStatement::decode(body.as_bytes()).is_err(), "{body}");
    }
    let huge = vec![b' '; MAX_STATEMENT_BYTES + 1];
    assert_eq!(
        SignedStatement::decode(&huge),
        Err(StatementError::TooLarge(MAX_STATEMENT_BYTES + 1))
    );
    // An out-of-range score in a well-formed body is refused by the decoder too.
    let high = good.replace("0.75", "1.25");
    assert!(matches!(
        SignedStatement::decode(high.as_bytes()),
        Err(StatementError::Score { .. })
    ));
}

#[test]
fn json_spelling_does_not_change_what_is_signed() {
    let signed = statement().sign(&key()).unwrap();
    let body = String::from_utf8(signed.encode()).unwrap();
    // Whitespace and another spelling of the same number.
    let respelled = body.replace("0.5", "5e-1").replace(",", " ,\n ");
    let back = SignedStatement::decode(respelled.as_bytes()).unwrap();
    back.verify(&key().public()).unwrap();
}

#[test]
fn issuers_serialize_by_kind() {
    let node = serde_json::to_string(&Issuer::Node("node-a".into())).unwrap();
    assert_eq!(node, r#"{"node":"node-a"}"#);
    let evaluator = serde_json::to_string(&Issuer::Evaluator("e".into())).unwrap();
    assert_eq!(evaluator, r#"{"evaluator":"e"}"#);
    assert_eq!(Issuer::Node("n".into()).to_string(), "node n");
}
