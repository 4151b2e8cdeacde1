//! Provider presets: `provider = "mailgun" | "ses" | "sendgrid" | "postmark"` on
//! `[relayhost]` or a `[[sender]]` stands for the provider's SMTP relay (in brackets, so
//! no MX lookup) at TLS level `secure`, with the provider's rules for the login. One
//! table ([`PRESETS`]) says what each provider is; adding one is adding a row. Also
//! here: the SMTP password Amazon SES derives from an IAM secret access key (AWS's
//! SigV4 SMTP-password algorithm), so a desired state can name the secret key's file.

use base64::Engine as _;
use ring::hmac;

/// What a provider's region selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Region {
    /// No region: one relay.
    None,
    /// One of a fixed list, the first the default.
    OneOf(&'static [(&'static str, &'static str)]),
    /// Required, any region name: the relay is `[email-smtp.<region>.amazonaws.com]:587`.
    Aws,
}

/// How the login must look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Login {
    /// Any username and password.
    Any,
    /// This username (SendGrid: `apikey`).
    Username(&'static str),
    /// The username is the password (Postmark's server token).
    SameToken,
    /// The username is an IAM access key ID; the password may be derived from the secret
    /// access key (`secret_access_key_file`).
    AwsKey,
}

/// One provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preset {
    pub name: &'static str,
    /// The relay, when the region does not choose it.
    pub relay: &'static str,
    pub region: Region,
    pub login: Login,
}

/// Every provider postrelay knows.
pub const PRESETS: &[Preset] = &[
    Preset {
        name: "mailgun",
        relay: "",
        region: Region::OneOf(&[
            ("us", "[smtp.mailgun.org]:587"),
            ("eu", "[smtp.eu.mailgun.org]:587"),
        ]),
        login: Login::Any,
    },
    Preset {
        name: "ses",
        relay: "",
        region: Region::Aws,
        login: Login::AwsKey,
    },
    Preset {
        name: "sendgrid",
        relay: "[smtp.sendgrid.net]:587",
        region: Region::None,
        login: Login::Username("apikey"),
    },
    Preset {
        name: "postmark",
        relay: "[smtp.postmarkapp.com]:587",
        region: Region::None,
        login: Login::SameToken,
    },
];

/// The TLS level of every preset's relay.
pub const TLS: &str = "secure";

/// The preset named `name`.
pub fn find(name: &str) -> Result<&'static Preset, String> {
    PRESETS.iter().find(|p| p.name == name).ok_or_else(|| {
        let names: Vec<String> = PRESETS.iter().map(|p| format!("{:?}", p.name)).collect();
        format!("provider {name:?}: expected one of {}", names.join(", "))
    })
}

impl Preset {
    /// The relay for `region` (`None`: not given).
    pub fn relay(&self, region: Option<&str>) -> Result<String, String> {
        match (self.region, region) {
            (Region::None, None) => Ok(self.relay.to_string()),
            (Region::None, Some(_)) => Err(format!("provider {:?} has no region", self.name)),
            (Region::OneOf(list), None) => Ok(list[0].1.to_string()),
            (Region::OneOf(list), Some(r)) => list
                .iter()
                .find(|(name, _)| *name == r)
                .map(|(_, relay)| relay.to_string())
                .ok_or_else(|| {
                    let names: Vec<String> = list.iter().map(|(n, _)| format!("{n:?}")).collect();
                    format!(
                        "provider {:?}: region {r:?}: expected {}",
                        self.name,
                        names.join(" or ")
                    )
                }),
            (Region::Aws, None) => Err(format!(
                "provider {:?} needs a region (\"eu-west-1\", \"us-east-1\"...)",
                self.name
            )),
            (Region::Aws, Some(r)) if aws_region(r) => {
                Ok(format!("[email-smtp.{r}.amazonaws.com]:587"))
            }
            (Region::Aws, Some(r)) => Err(format!(
                "provider {:?}: region {r:?}: not an AWS region name (like \"eu-west-1\")",
                self.name
            )),
        }
    }
}

/// `eu-west-1`, `us-gov-west-1`: lowercase words and a number, joined by `-`.
fn aws_region(r: &str) -> bool {
    let parts: Vec<&str> = r.split('-').collect();
    parts.len() >= 3
        && parts.iter().all(|p| !p.is_empty())
        && parts[..parts.len() - 1]
            .iter()
            .all(|p| p.bytes().all(|b| b.is_ascii_lowercase()))
        && parts[parts.len() - 1].bytes().all(|b| b.is_ascii_digit())
}

/// Amazon SES's SMTP password for the IAM secret access key `secret` in `region`: the
/// HMAC-SHA256 chain of SigV4 ("AWS4" + secret; "11111111", region, "ses",
/// "aws4_request", "SendRawEmail"), prefixed with the version byte 4, in base64.
pub fn ses_smtp_password(secret: &str, region: &str) -> String {
    let sign = |key: &[u8], message: &str| {
        let key = hmac::Key::new(hmac::HMAC_SHA256, key);
        hmac::sign(&key, message.as_bytes()).as_ref().to_vec()
    };
    let mut signature = format!("AWS4{secret}").into_bytes();
    for message in ["11111111", region, "ses", "aws4_request", "SendRawEmail"] {
        signature = sign(&signature, message);
    }
    let mut versioned = vec![0x04];
    versioned.extend_from_slice(&signature);
    base64::engine::general_purpose::STANDARD.encode(versioned)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vectors published with the SigV4 SMTP-password algorithm (as in Terraform's
    /// AWS provider's tests).
    #[test]
    fn ses_passwords_match_the_published_vectors() {
        for (region, secret, want) in [
            (
                "eu-central-1",
                "some+secret+key",
                "BMXhUYlu5Z3gSXVQORxlVa7XPaz91aGWdfHxvkOZdWZ2",
            ),
            (
                "eu-central-1",
                "another+secret+key",
                "BBbphbrQmrKMx42d1N6+C7VINYEBGI5v9VsZeTxwskfh",
            ),
            (
                "us-west-1",
                "some+secret+key",
                "BH+jbMzper5WwlwUar9E1ySBqHa9whi0GPo+sJ0mVYJj",
            ),
            (
                "us-west-1",
                "another+secret+key",
                "BKVmjjMDFk/qqw8EROW99bjCS65PF8WKvK5bSr4Y6EqF",
            ),
        ] {
            assert_eq!(ses_smtp_password(secret, region), want, "{region} {secret}");
        }
    }

    #[test]
    fn presets_choose_the_relay_and_refuse_what_they_do_not_have() {
        let relay = |name: &str, region: Option<&str>| find(name).unwrap().relay(region);
        assert_eq!(relay("mailgun", None).unwrap(), "[smtp.mailgun.org]:587");
        assert_eq!(
            relay("mailgun", Some("eu")).unwrap(),
            "[smtp.eu.mailgun.org]:587"
        );
        assert!(
            relay("mailgun", Some("ap"))
                .unwrap_err()
                .contains("expected \"us\" or \"eu\"")
        );
        assert_eq!(
            relay("ses", Some("eu-west-1")).unwrap(),
            "[email-smtp.eu-west-1.amazonaws.com]:587"
        );
        assert!(relay("ses", None).unwrap_err().contains("needs a region"));
        for bad in ["EU-west-1", "eu-west", "eu..1", "eu-west-1a", "-eu-west-1"] {
            assert!(relay("ses", Some(bad)).is_err(), "{bad}");
        }
        assert_eq!(relay("sendgrid", None).unwrap(), "[smtp.sendgrid.net]:587");
        assert!(
            relay("postmark", Some("us"))
                .unwrap_err()
                .contains("has no region")
        );
        assert!(
            find("mandrill")
                .unwrap_err()
                .contains("expected one of \"mailgun\"")
        );
        // Every preset's relay parses, in brackets: no MX lookup.
        for p in PRESETS {
            let r = p.relay(if p.region == Region::Aws {
                Some("us-east-1")
            } else {
                None
            });
            let r = crate::routing::Relay::parse(&r.unwrap()).unwrap();
            assert!(r.is_bracketed(), "{}", p.name);
        }
    }
}
