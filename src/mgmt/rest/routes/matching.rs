//! Finding the route of a method and path in [`ROUTES`]: literal segments win over
//! `{param}` ones, and a path some route claims answers 405 with its methods.

use super::{ROUTES, Route};

/// What a method and path lead to.
pub enum Found<'a> {
    Route(&'static Route, Vec<&'a str>),
    /// The path exists with other methods, listed for the `Allow` header.
    MethodNotAllowed(String),
    NotFound,
}

/// Finds the route for `method` and `path` (a trailing `/` is ignored). A literal segment
/// wins over a `{param}` one, so `/users/login` is not user `login`.
pub fn find<'a>(method: &str, path: &'a str) -> Found<'a> {
    let path = path
        .strip_suffix('/')
        .filter(|p| !p.is_empty())
        .unwrap_or(path);
    let mut best: Option<(&'static Route, Vec<&'a str>, usize)> = None;
    let mut allowed: Vec<&'static str> = Vec::new();
    for route in ROUTES {
        let Some((params, literals)) = match_path(route.path, path) else {
            continue;
        };
        if route.method != method {
            // A path that some literal route claims is not a `{param}` route's too.
            allowed.push(route.method);
            continue;
        }
        if best.as_ref().is_none_or(|(_, _, most)| literals > *most) {
            best = Some((route, params, literals));
        }
    }
    match best {
        Some((route, params, literals)) => {
            // `POST /users/login` must not be shadowed, and `GET /users/login` must not
            // fall through to `GET /users/{id}`: a more literal match on another method
            // means this path belongs to that route.
            let shadowed = ROUTES.iter().any(|other| {
                other.method != method
                    && match_path(other.path, path).is_some_and(|(_, l)| l > literals)
            });
            if shadowed {
                Found::MethodNotAllowed(literal_methods(path))
            } else {
                Found::Route(route, params)
            }
        }
        None if allowed.is_empty() => Found::NotFound,
        None => {
            allowed.dedup();
            Found::MethodNotAllowed(allowed.join(", "))
        }
    }
}

/// The methods of the most literal routes matching `path`.
fn literal_methods(path: &str) -> String {
    let most = ROUTES
        .iter()
        .filter_map(|route| match_path(route.path, path).map(|(_, literals)| literals))
        .max()
        .unwrap_or(0);
    let mut methods: Vec<&str> = ROUTES
        .iter()
        .filter(|route| match_path(route.path, path).is_some_and(|(_, l)| l == most))
        .map(|route| route.method)
        .collect();
    methods.dedup();
    methods.join(", ")
}

/// The parameters of `path` under `pattern` and how many segments matched literally.
fn match_path<'a>(pattern: &str, path: &'a str) -> Option<(Vec<&'a str>, usize)> {
    let mut params = Vec::new();
    let mut literals = 0;
    let mut want = pattern.split('/');
    let mut have = path.split('/');
    loop {
        match (want.next(), have.next()) {
            (None, None) => return Some((params, literals)),
            (Some(w), Some(h)) if w.starts_with('{') && w.ends_with('}') && !h.is_empty() => {
                params.push(h);
            }
            (Some(w), Some(h)) if w == h => literals += 1,
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route_of(method: &str, path: &str) -> Option<(&'static str, Vec<String>)> {
        match find(method, path) {
            Found::Route(route, params) => {
                Some((route.path, params.into_iter().map(str::to_owned).collect()))
            }
            _ => None,
        }
    }

    #[test]
    fn literal_segments_win_over_parameters() {
        assert_eq!(
            route_of("POST", "/api/rest/users/login"),
            Some(("/api/rest/users/login", vec![]))
        );
        assert_eq!(
            route_of("GET", "/api/rest/users/7"),
            Some(("/api/rest/users/{id}", vec!["7".to_owned()]))
        );
        assert_eq!(
            route_of("GET", "/api/rest/events/types/"),
            Some(("/api/rest/events/types", vec![]))
        );
        assert!(matches!(
            find("GET", "/api/rest/users/login"),
            Found::MethodNotAllowed(allow) if allow == "POST"
        ));
        assert!(matches!(
            find("PATCH", "/api/rest/volumes/3"),
            Found::MethodNotAllowed(allow) if allow == "GET, PUT, DELETE"
        ));
        assert_eq!(
            route_of("POST", "/api/rest/controllers/2/fail"),
            Some(("/api/rest/controllers/{id}/fail", vec!["2".to_owned()]))
        );
        assert!(matches!(
            find("GET", "/api/rest/controllers/2/recover"),
            Found::MethodNotAllowed(allow) if allow == "POST"
        ));
        assert!(matches!(find("GET", "/api/rest/nothing"), Found::NotFound));
        assert!(matches!(
            find("GET", "/api/rest/volumes//"),
            Found::NotFound
        ));
        assert!(matches!(find("GET", ""), Found::NotFound));
    }

    #[test]
    fn every_route_is_unique() {
        for (index, route) in ROUTES.iter().enumerate() {
            for other in &ROUTES[index + 1..] {
                assert!(
                    !(route.method == other.method && route.path == other.path),
                    "{} {} is in the table twice",
                    route.method,
                    route.path
                );
            }
        }
    }
}
