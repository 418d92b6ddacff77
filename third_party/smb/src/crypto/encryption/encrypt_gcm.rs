//! AES-GCM transform encryption on `ring` (fargate-smb patch).
//!
//! The published crate used the RustCrypto `aes-gcm` crate here. `ring`'s AES-GCM (assembly with
//! AES-NI and carry-less multiplication, several blocks in parallel) costs a fraction of the CPU
//! per byte, and SMB3 encrypts every byte of every message, so this is most of a client's work
//! on a large copy. `ring` is already in the dependency tree through rustls.

use ring::aead::{AES_128_GCM, AES_256_GCM, Aad, Algorithm, LessSafeKey, Nonce, Tag, UnboundKey};

use crate::crypto::CryptoError;

use super::*;

/// The SMB3 GCM nonce is the first 12 bytes of the transform header's 16-byte nonce field.
const GCM_NONCE_LEN: usize = 12;

pub type Aes128GcmEncryptor = AesGcmEncryptor<Aes128>;
pub type Aes256GcmEncryptor = AesGcmEncryptor<Aes256>;

/// Key size markers, so the two ciphers keep distinct type names.
pub trait GcmKeySize: Send + Sync + 'static {
    const ALGORITHM: &'static Algorithm;
}
pub struct Aes128;
pub struct Aes256;
impl GcmKeySize for Aes128 {
    const ALGORITHM: &'static Algorithm = &AES_128_GCM;
}
impl GcmKeySize for Aes256 {
    const ALGORITHM: &'static Algorithm = &AES_256_GCM;
}

pub struct AesGcmEncryptor<T> {
    key: std::sync::Arc<LessSafeKey>,
    _size: std::marker::PhantomData<T>,
}

impl<T> Clone for AesGcmEncryptor<T> {
    fn clone(&self) -> Self {
        Self {
            key: self.key.clone(),
            _size: std::marker::PhantomData,
        }
    }
}

impl<T: GcmKeySize> AesGcmEncryptor<T> {
    pub fn build(encrypting_key: &[u8]) -> Result<Box<dyn EncryptingAlgo>, CryptoError> {
        let key = UnboundKey::new(T::ALGORITHM, encrypting_key)
            .map_err(|_| CryptoError::InvalidLength(crypto_common::InvalidLength))?;
        Ok(Box::new(Self {
            key: std::sync::Arc::new(LessSafeKey::new(key)),
            _size: std::marker::PhantomData,
        }))
    }
}

fn gcm_nonce(nonce: &EncryptionNonce) -> Result<Nonce, CryptoError> {
    // The rest of the field is zero for GCM.
    debug_assert!(nonce[GCM_NONCE_LEN..].iter().all(|&x| x == 0));
    Nonce::try_assume_unique_for_key(&nonce[..GCM_NONCE_LEN])
        .map_err(|_| CryptoError::InvalidLength(crypto_common::InvalidLength))
}

impl<T: GcmKeySize> EncryptingAlgo for AesGcmEncryptor<T> {
    fn encrypt(
        &mut self,
        payload: &mut [u8],
        header_data: &[u8],
        nonce: &EncryptionNonce,
    ) -> Result<EncryptionResult, CryptoError> {
        let tag = self
            .key
            .seal_in_place_separate_tag(gcm_nonce(nonce)?, Aad::from(header_data), payload)
            .map_err(|_| CryptoError::AeadError(aead::Error))?;
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(tag.as_ref());
        Ok(EncryptionResult {
            signature: u128::from_le_bytes(bytes),
        })
    }

    fn decrypt(
        &mut self,
        payload: &mut [u8],
        header_data: &[u8],
        nonce: &EncryptionNonce,
        signature: u128,
    ) -> Result<(), CryptoError> {
        self.key
            .open_in_place_separate_tag(
                gcm_nonce(nonce)?,
                Aad::from(header_data),
                Tag::from(signature.to_le_bytes()),
                payload,
                0..,
            )
            .map_err(|_| CryptoError::AeadError(aead::Error))?;
        Ok(())
    }

    fn nonce_size(&self) -> usize {
        GCM_NONCE_LEN
    }

    fn clone_box(&self) -> Box<dyn EncryptingAlgo> {
        Box::new(self.clone())
    }
}

impl<T> std::fmt::Debug for AesGcmEncryptor<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AesGcmEncryptor(ring)")
    }
}
