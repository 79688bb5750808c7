//! A claimed row's payload (config, limits, grants, context, parent results), decoded field
//! by field so that one row a guest poisoned (e.g. a result nested past serde_json's depth
//! limit once wrapped in `parent_results`) fails only its own step, never the claim batch.

use crate::store::Result;

/// Collects the first decoding failure of a row's payload fields.
#[derive(Debug, Default)]
pub(crate) struct Payload {
    defect: Option<String>,
}

impl Payload {
    /// The decoded value, or the type's default with the failure remembered.
    pub fn field<T: Default>(&mut self, name: &str, decoded: Result<T>) -> T {
        match decoded {
            Ok(v) => v,
            Err(e) => {
                self.defect.get_or_insert_with(|| {
                    format!("the step's stored {name} cannot be decoded: {e}")
                });
                T::default()
            }
        }
    }

    /// A typed setting stored as JSON (`what` names its column).
    pub fn typed<T: Default + serde::de::DeserializeOwned>(
        &mut self,
        name: &str,
        what: &str,
        json: Result<serde_json::Value>,
    ) -> T {
        let decoded = json.and_then(|v| {
            serde_json::from_value(v).map_err(|e| crate::error::StoreError::decode(what, e))
        });
        self.field(name, decoded)
    }

    pub fn defect(self) -> Option<String> {
        self.defect
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::StoreError;

    #[test]
    fn first_failure_is_kept_and_fields_default() {
        let mut p = Payload::default();
        assert_eq!(p.field("config", Ok(3)), 3);
        let v: Vec<u8> = p.field("context", Err(StoreError::decode("column context", "deep")));
        assert!(v.is_empty());
        let _: u8 = p.field("grants", Err(StoreError::decode("column grants", "bad")));
        let d = p.defect().unwrap();
        assert!(
            d.contains("context") && d.contains("deep") && !d.contains("grants"),
            "{d}"
        );
    }
}
