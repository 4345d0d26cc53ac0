//! Where the data lives, and how it is shown: never with its password.

use std::{fmt, path::PathBuf, str::FromStr};

/// Where the data lives: a SQLite file, or a PostgreSQL database named by a
/// `postgres://` or `postgresql://` URL. Shown (Display and Debug alike)
/// with any password redacted.
#[derive(Clone, PartialEq, Eq)]
pub enum Location {
    /// A SQLite file, created with its schema when missing.
    File(PathBuf),
    /// A PostgreSQL connection URL.
    Postgres(String),
}

impl FromStr for Location {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(
            if s.starts_with("postgres://") || s.starts_with("postgresql://") {
                Self::Postgres(s.to_owned())
            } else {
                Self::File(PathBuf::from(s))
            },
        )
    }
}

impl From<PathBuf> for Location {
    fn from(path: PathBuf) -> Self {
        Self::File(path)
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(path) => write!(f, "{}", path.display()),
            Self::Postgres(url) => f.write_str(&redacted(url)),
        }
    }
}

impl fmt::Debug for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Location({self})")
    }
}

/// `url` with its password (in the authority or as a `password` query
/// parameter) replaced; a URL that does not parse is not shown at all.
pub(crate) fn redacted(url: &str) -> String {
    const HIDDEN: &str = "********";
    let Ok(mut parsed) = url::Url::parse(url) else {
        return "postgres://(a URL that does not parse)".to_owned();
    };
    if parsed.password().is_some() {
        let _ = parsed.set_password(Some(HIDDEN));
    }
    if parsed.query_pairs().any(|(k, _)| k == "password") {
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(k, v)| {
                let v = if k == "password" {
                    HIDDEN.into()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
    }
    parsed.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_location_is_shown_without_its_password_however_it_is_given() {
        let shown = |s: &str| {
            let location: Location = s.parse().expect("infallible");
            (location.to_string(), format!("{location:?}"))
        };
        for url in [
            "postgres://dana:s3cret@db.internal:5432/conversations",
            "postgresql://dana:s3cret@db.internal/conversations?sslmode=require",
            "postgres://dana@db.internal/conversations?password=s3cret",
            "postgres://dana:s3cret@[::1",
        ] {
            let (display, debug) = shown(url);
            assert!(
                !display.contains("s3cret") && !debug.contains("s3cret"),
                "{display} {debug}"
            );
        }
        assert_eq!(
            shown("postgres://dana:s3cret@db.internal/c").0,
            "postgres://dana:********@db.internal/c"
        );
        assert_eq!(shown("./conversations.db").0, "./conversations.db");
        assert!(matches!(
            "postgresql://x/y".parse::<Location>(),
            Ok(Location::Postgres(_))
        ));
        assert!(matches!(
            "postgres.db".parse::<Location>(),
            Ok(Location::File(_))
        ));
    }
}
